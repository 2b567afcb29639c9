"""Training step and whole-frame inference of every ResNet-101 method and HRNet-W48 + OCR on a GPU.

One table: per model a training step at 769x769, batch 2 (the original's per-GPU batch), in
float32 and AMP (fp16 with the gradient scaler on CUDA, bf16 on CPU), each with and without
``--recompute``: ms per step, images/s, peak memory; and one whole 1024x2048 frame of inference
(float32, eval mode). The step is ``engine.training.train_step`` on a run built by
``engine.training.build_run`` from ``train.py``'s own flags, so it measures what ``train.py`` does
(loader excluded: one fixed batch). FLOPs per step come from ``torch.utils.flop_counter`` (convs,
matmuls, attention; forward and backward, recomputation not counted) and are given as a share of
the machine's measured matmul rate (float32 rows against float32, AMP rows against fp16/bf16).

Peak memory is ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (weights,
gradients and optimizer state included), the figure mmsegmentation's model zoo reports; on CPU it
is not measured. Peers' published figures sit beside the matching rows, with the GPU they were
measured on. ``--quick`` runs the same code with the small backbones (resnet18, hrnetv2_w18) at
small sizes, so the benchmark is exercised on CPU by the test suite.
"""

from __future__ import annotations

import gc
import math
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import oc_module.attention
import oc_module.isa
import oc_module.ocr
import train
from dataset.synthetic.cli import generate
from engine.cli import autocast_dtype
from engine.training import FaultHooks, build_run, setup_process, train_step
from inplace_abn import ABN
from network import METHODS, get_segmentation_model, model_names, split_model_name
from utils.logger import TrainingLogger

# Peers' published figures (training memory per GPU at batch 2 per GPU, 4 GPUs; inference fps on
# whole Cityscapes frames), from mmsegmentation's model zoo, measured on V100 GPUs:
# configs/isanet/README.md (ISANet R-101-D8, 769x769, 40k: Mem 10.815 GB, 0.92 fps). The OCRNet
# and NonLocal figures are those quoted in this project's issue tracker and were not re-read here.
PEERS = {
    "resnet101_isa_oc_dsn": "mmseg ISANet R-101-D8 769x769: 10.8 GB train, 0.92 fps (V100; "
    "configs/isanet/README.md)",
    "resnet101_base_oc_dsn": "mmseg NonLocal R-101-D8: 12.8 GB train (V100; figure as quoted, "
    "not re-read)",
    "resnet101_ocr_dsn": "mmseg OCRNet R-101-D8 512x1024: 8.8 GB train (V100; figure as quoted, "
    "not re-read)",
}


@dataclass
class Sizes:
    crop: int  # training crop side
    frame: tuple[int, int]  # whole-frame inference size
    warmup: int
    steps: int  # timed training steps per case
    networks: tuple[str, str]  # (ResNet, HRNet) backbones


FULL = Sizes(769, (1024, 2048), warmup=2, steps=5, networks=("resnet101", "hrnetv2_w48"))
QUICK = Sizes(65, (64, 128), warmup=1, steps=1, networks=("resnet18", "hrnetv2_w18"))


def models(sizes: Sizes) -> list[str]:
    resnet, hrnet = sizes.networks
    names = [f"{resnet}_{method}" for method in METHODS]
    return names + [n for n in (f"{hrnet}_ocr_dsn",) if n in model_names()]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)  # one index for the peak-memory queries
    return device


def amp_mode(device: torch.device) -> str:
    """The AMP a user would pick: fp16 with the scaler on CUDA, bf16 on CPU."""
    return "fp16" if device.type == "cuda" else "bf16"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return math.nan


def matmul_tflops(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """The best rate of a ``size``-cubed matmul in ``dtype`` (TF32 as the process has it)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up (and cuBLAS handle creation)
    synchronize(device)
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e12


def train_argv(name: str, data_dir: str, crop: int, device: torch.device, amp: str) -> list[str]:
    network, method = split_model_name(name)
    return [
        "--network", network, "--method", method, "--dataset", "cityscapes",
        "--data-dir", data_dir, "--data-list", f"{data_dir}/train.lst",
        "--input-size", f"{crop},{crop}", "--batch-size", "2", "--num-steps", "1000",
        "--workers", "0", "--device", str(device), "--amp", amp, "--snapshot-dir", data_dir,
    ]  # fmt: skip


@contextmanager
def training_run(argv: list[str], device: torch.device) -> Iterator:
    """A ``TrainingRun`` built as ``train.py`` builds it (no log files), and one fixed batch."""
    args = train.get_args_parser().parse_args(argv)
    setup_process(args)
    logger = TrainingLogger(args.snapshot_dir, enabled=False)
    run = build_run(args, device, logger, start=0, restore=False)
    images, labels, _ = next(iter(run.loader))
    try:
        yield run, images, labels
    finally:
        del run
        reset_peak(device)


def step_flops(run, images: torch.Tensor, labels: torch.Tensor) -> float:
    """FLOPs of one training step (forward + backward) as ``train_step`` runs it."""
    with FlopCounterMode(display=False) as counter:
        train_step(run, images, labels, FaultHooks())
    return float(counter.get_total_flops())


def time_training(
    name: str, data_dir: str, sizes: Sizes, device: torch.device, amp: str, recompute: bool
) -> dict:
    argv = train_argv(name, data_dir, sizes.crop, device, amp)
    if recompute:
        argv.append("--recompute")
    with training_run(argv, device) as (run, images, labels):
        hooks = FaultHooks()
        for _ in range(sizes.warmup):
            train_step(run, images, labels, hooks)
        synchronize(device)
        reset_peak(device)
        started = time.perf_counter()
        for _ in range(sizes.steps):
            values = train_step(run, images, labels, hooks)
        synchronize(device)
        seconds = (time.perf_counter() - started) / sizes.steps
        peak = peak_mib(device)
        # Useful FLOPs: counted without recomputation (recomputed forwards are extra work).
        flops = math.nan if recompute else step_flops(run, images, labels)
    if not math.isfinite(values["loss"]):
        raise RuntimeError(f"loss is {values['loss']}")
    return {"ms": seconds * 1e3, "images_s": 2 / seconds, "peak_mib": peak, "flops": flops}


def time_inference(name: str, sizes: Sizes, device: torch.device) -> dict:
    """One whole frame, float32, eval mode, plain ABN (what the prediction tools use)."""
    torch.manual_seed(0)
    model = get_segmentation_model(name, norm_layer=ABN).eval().to(device)
    image = torch.randn(1, 3, *sizes.frame, device=device)
    with torch.inference_mode():
        model(image)  # warm-up: kernel selection, allocator
        synchronize(device)
        reset_peak(device)
        started = time.perf_counter()
        model(image)
        synchronize(device)
        seconds = time.perf_counter() - started
        peak = peak_mib(device)
        with FlopCounterMode(display=False) as counter:  # apart: the mode slows every op
            model(image)
    paths = attention_paths(model, image)
    del model, image
    reset_peak(device)
    return {
        "ms": seconds * 1e3,
        "peak_mib": peak,
        "flops": float(counter.get_total_flops()),
        "paths": paths,
    }


def attention_paths(model: nn.Module, *inputs: torch.Tensor) -> list[str]:
    """The ``softmax_attention`` path of every attention call of one forward, in call order.

    Each head module imported the primitive by name, so it is wrapped where each looks it up.
    """
    paths: list[str] = []
    original = oc_module.attention.softmax_attention

    def recording(query, key, value, *args, **kwargs):
        paths.append(oc_module.attention.attention_backend(query, key, value))
        return original(query, key, value, *args, **kwargs)

    holders = (oc_module.attention, oc_module.isa, oc_module.ocr)
    for holder in holders:
        holder.softmax_attention = recording
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for holder in holders:
            holder.softmax_attention = original
    return paths


def share(flops: float, ms: float, rate_tflops: float) -> str:
    if not math.isfinite(flops) or not ms:
        return ""
    return f"{flops / (ms / 1e3) / (rate_tflops * 1e12):.0%}"


def number(value: float, digits: int = 0) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"


HEADER = (
    "| model | case | ms | images/s | peak MiB | GFLOP | share of matmul rate | peer (GPU) |\n"
    "|---|---|---|---|---|---|---|---|"
)


def run(quick: bool = False, device: str = "auto", repeats: int | None = None) -> str:
    """The markdown table; a failing row is printed as FAILED and the others still run.

    ``repeats`` timed training steps per case after one warm-up step (the GPU check's budget)."""
    sizes = QUICK if quick else FULL
    if repeats is not None:
        sizes = replace(sizes, warmup=1, steps=max(1, repeats))
    device = resolve_device(device)
    amp = amp_mode(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    low = autocast_dtype(amp)
    size = 1024 if quick else 8192
    rate32, rate_low = matmul_tflops(device, torch.float32, size), matmul_tflops(device, low, size)
    name_of = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [
        f"Device: {name_of}. Matmul rate ({size}^3): float32 {rate32:.1f} TFLOP/s, {amp} "
        f"{rate_low:.1f} TFLOP/s (TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, cuDNN "
        f"TF32 {torch.backends.cudnn.allow_tf32}). Training: crop {sizes.crop}, batch 2, "
        f"{sizes.steps} timed steps after {sizes.warmup}; inference: {sizes.frame[0]}x"
        f"{sizes.frame[1]}, batch 1.",
        "",
        HEADER,
    ]
    failures = 0
    with tempfile.TemporaryDirectory() as data_dir:
        scene = max(sizes.crop + 8, 96)
        generate(data_dir, {"train": 2}, height=scene, width=scene)
        for name in models(sizes):
            cases = [(a, r) for a in ("none", amp) for r in (False, True)]
            for precision, recompute in cases:
                label = ("fp32" if precision == "none" else precision) + (
                    " + recompute" if recompute else ""
                )
                case = f"train {label}"
                try:
                    result = time_training(name, data_dir, sizes, device, precision, recompute)
                    rate = rate32 if precision == "none" else rate_low
                    peer = PEERS.get(name, "") if (precision, recompute) == ("none", False) else ""
                    lines.append(
                        f"| {name} | {case} | {result['ms']:.1f} | {result['images_s']:.2f} | "
                        f"{number(result['peak_mib'])} | {number(result['flops'] / 1e9, 1)} | "
                        f"{share(result['flops'], result['ms'], rate)} | {peer} |"
                    )
                except (Exception, SystemExit) as error:  # one failing row must not hide the others
                    failures += 1
                    traceback.print_exc()
                    lines.append(f"| {name} | {case} | FAILED: {one_line(error)} | | | | | |")
            try:
                result = time_inference(name, sizes, device)
                paths = ", ".join(sorted(set(result["paths"]))) or "none"
                lines.append(
                    f"| {name} | whole frame fp32 (attention: {paths}) | {result['ms']:.1f} | "
                    f"{1e3 / result['ms']:.2f} | {number(result['peak_mib'])} | "
                    f"{result['flops'] / 1e9:.1f} | {share(result['flops'], result['ms'], rate32)}"
                    " | |"
                )
            except (Exception, SystemExit) as error:
                failures += 1
                traceback.print_exc()
                lines.append(f"| {name} | whole frame fp32 | FAILED: {one_line(error)} | | | | | |")
    if failures:
        lines += ["", f"FAILED rows: {failures}"]
    table = "\n".join(lines)
    if failures:
        raise BenchmarkFailures(table)
    return table


class BenchmarkFailures(RuntimeError):
    """Some rows failed; ``table`` is the whole table, failed rows included."""

    def __init__(self, table: str) -> None:
        super().__init__("some rows of bench.gpu failed")
        self.table = table


def one_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".replace("|", "/").replace("\n", " ")
    return text[:200]


if __name__ == "__main__":
    print(run())
