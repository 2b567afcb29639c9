"""Inference cost of each OC head relative to the baseline, ResNet-101, CPU.

Eval mode under ``torch.inference_mode``; median of a few repeats after one warm-up, all
models timed in this one process at the same thread count. The ``*_dsn`` models also run their
DSN branch (they return it in eval mode too), as the original's evaluation did.
"""

from __future__ import annotations

import time

import torch

from bench.common import print_rows, row
from network import METHODS, get_segmentation_model


def run(quick: bool = False, threads: int = 2) -> list[dict]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    size, repeats = (129, 2) if quick else (257, 3)
    models = {m: get_segmentation_model(f"resnet101_{m}").eval() for m in METHODS}
    x = torch.randn(1, 3, size, size)
    times = {m: [] for m in METHODS}
    with torch.inference_mode():
        for model in models.values():
            model(x)
        # Round-robin, so drifting load on a shared machine affects every model alike.
        for _ in range(repeats):
            for m, model in models.items():
                start = time.perf_counter()
                model(x)
                times[m].append(time.perf_counter() - start)
    seconds = {m: sorted(t)[len(t) // 2] for m, t in times.items()}
    note = f"1x3x{size}x{size}, {threads} threads, median of {repeats}, DSN head included"
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
