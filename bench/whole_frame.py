"""Whole-frame inference of every ResNet-101 method and HRNet-W48 + OCR, against the baseline.

Each model runs once on a full 1024x2048 Cityscapes frame (and on a 769x769 crop) in a fresh
process: peak memory (resident-set growth during the call, weights included), wall time, FLOPs
counted by ``torch.utils.flop_counter`` on the meta device (convolutions, matmuls and attention;
element-wise work is not counted), and achieved GFLOP/s. Every number is also given as a ratio to
``resnet101_baseline`` measured in the same run. Eval mode, ``torch.inference_mode``, float32,
plain ABN (what the prediction tools use).

The table also gives the machine's best float32 rate (a large matmul) and, per method, the
time its FLOPs beyond the baseline's would take at that rate, added to the baseline's time. For a
head that only adds matmuls to the baseline (Base-OC: the baseline's conv, then attention) that
is a lower bound; for a head that replaces the baseline's conv by others (ASP-OC) an estimate.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import print_rows, row, run_isolated
from inplace_abn import ABN
from network import METHODS, get_segmentation_model, model_names

REFERENCE = "resnet101_baseline"


def models() -> list[str]:
    names = [f"resnet101_{method}" for method in METHODS]
    return names + [n for n in ("hrnetv2_w48_ocr_dsn",) if n in model_names()]


def forward_seconds(name: str, height: int, width: int, threads: int) -> float:
    """One inference of ``name`` on a random image (run in a fresh process by ``run``)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = get_segmentation_model(name, norm_layer=ABN).eval()
    image = torch.randn(1, 3, height, width)
    with torch.inference_mode():
        started = time.perf_counter()
        model(image)
        return time.perf_counter() - started


def matmul_gflops_per_s(threads: int, size: int = 4096, repeats: int = 3) -> float:
    """The best rate of a ``size``-cubed float32 matmul (run in a fresh process)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def bound_rows(results: dict[str, dict], peak: float, size: str, note: str) -> list[dict]:
    """The matmul rate, and each model's time if its FLOPs beyond the baseline's ran at it."""
    reference = results[REFERENCE]
    rows = [row("float32 matmul 4096^3 achieved", peak, reference["gflops_per_s"], "GFLOP/s",
                REFERENCE, f"{note}, best of 3")]  # fmt: skip
    for name, values in results.items():
        if name != REFERENCE and name.startswith("resnet101"):
            extra = max(0.0, values["gflops"] - reference["gflops"])
            rows.append(row(f"{name} {size} time at matmul rate",
                            reference["seconds"] + extra / peak,
                            reference["seconds"], "s", REFERENCE,
                            "baseline time + extra FLOPs at the matmul rate"))  # fmt: skip
    return rows


def count_flops(name: str, height: int, width: int) -> int:
    """Multiply-adds x 2 of one forward, counted on the meta device (no memory, no compute)."""
    with torch.device("meta"):
        model = get_segmentation_model(name, norm_layer=ABN).eval()
        image = torch.empty(1, 3, height, width)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(image)
    return counter.get_total_flops()


def measure(names: list[str], height: int, width: int, threads: int) -> dict[str, dict]:
    results = {}
    for name in names:
        case = run_isolated("bench.whole_frame:forward_seconds", name, height, width, threads)
        flops = count_flops(name, height, width)
        seconds = case["result"]
        results[name] = {
            "seconds": seconds,
            "peak_mib": case["delta_mib"],
            "gflops": flops / 1e9,
            "gflops_per_s": flops / 1e9 / seconds,
        }
        print(f"  {name} {height}x{width}: {results[name]}", flush=True)
    return results


def rows_for(results: dict[str, dict], size: str, note: str) -> list[dict]:
    reference = results[REFERENCE]
    measures = (
        ("time", "seconds", "s"),
        ("peak memory", "peak_mib", "MiB"),
        ("FLOPs", "gflops", "GFLOP"),
        ("achieved", "gflops_per_s", "GFLOP/s"),
    )
    return [
        row(f"{name} {size} {label}", values[key], reference[key], unit, REFERENCE, note)
        for name, values in results.items()
        for label, key, unit in measures
    ]


def run(quick: bool = False, threads: int = 2) -> list[dict]:
    frame, crop = ((257, 513), (193, 193)) if quick else ((1024, 2048), (769, 769))
    note = f"{threads} threads, one pass, fresh process per model"
    names = models()
    frame_results = measure(names, *frame, threads)
    rows = rows_for(frame_results, f"{frame[0]}x{frame[1]}", note)
    peak = run_isolated("bench.whole_frame:matmul_gflops_per_s", threads)["result"]
    rows += bound_rows(frame_results, peak, f"{frame[0]}x{frame[1]}", f"{threads} threads")
    crop_names = [REFERENCE] + [n for n in names if n.startswith("hrnet")]
    rows += rows_for(measure(crop_names, *crop, threads), f"{crop[0]}x{crop[1]}", note)
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, for a smoke run")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print_rows(run(args.quick, args.threads))
