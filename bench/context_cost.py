"""Inference cost of each OC head relative to the baseline, ResNet-101, CPU.

Eval mode under ``torch.inference_mode``; median of a few repeats after one warm-up, all
models timed in this one process at the same thread count.
"""

from __future__ import annotations

import time

import torch

from bench.common import print_rows, row
from network import METHODS, get_segmentation_model


def time_model(name: str, size: int, repeats: int) -> float:
    torch.manual_seed(0)
    model = get_segmentation_model(name).eval()
    x = torch.randn(1, 3, size, size)
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def run(quick: bool = False, threads: int = 2) -> list[dict]:
    torch.set_num_threads(threads)
    size, repeats = (129, 2) if quick else (257, 3)
    seconds = {m: time_model(f"resnet101_{m}", size, repeats) for m in METHODS}
    note = f"1x3x{size}x{size}, {threads} threads, median of {repeats}"
    return [
        row(f"resnet101_{m} inference", seconds[m], seconds["baseline"], "s", "baseline", note)
        for m in METHODS
    ]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller input, fewer repeats")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print_rows(run(args.quick, args.threads))
