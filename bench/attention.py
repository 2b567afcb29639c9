"""Object-context attention: ours vs. the original's explicit N x N map and our old split heads.

Peak memory (fresh process per case) and time of one ObjectContext block, 512 input channels:
inference (``torch.inference_mode``) at the feature size of a full 1024x2048 Cityscapes image
(128x256) and of a 769 crop (97x97), and forward + backward at the crop size, as in training.
CPU, float32. "Old split heads" is this project's previous primitive: a value wider than the key
split into key-wide SDPA heads, q and k repeated per head, so every similarity was computed once
per head.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from bench.common import print_rows, row, run_isolated
from oc_module import ObjectContext

# (label, key width, value width, pooling scale): Base-OC's block and ASP-OC's context block,
# plus ASP-OC's widths without pooling (where the value is wider than the key at full size).
VARIANTS = {
    "base_oc": (256, 256, 1),
    "asp_oc_context": (256, 512, 2),
    "asp_oc_widths_unpooled": (256, 512, 1),
}
SIZES = [(97, 97), (128, 256)]
QUICK_SIZES = [(33, 33), (48, 64)]
IMPLS = ("ours", "split_heads", "naive")


class NaiveObjectContext(ObjectContext):
    """The original's attention layout: [B, N, C] views, bmm, scaled softmax, bmm."""

    def attend(self, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        batch, key_channels, height, width = key.shape
        value_channels = value.shape[1]
        query = key.view(batch, key_channels, -1).permute(0, 2, 1)
        sim_map = torch.matmul(query, key.view(batch, key_channels, -1))
        sim_map = (key_channels**-0.5) * sim_map
        sim_map = torch.softmax(sim_map, dim=-1)
        context = torch.matmul(sim_map, value.view(batch, value_channels, -1).permute(0, 2, 1))
        return context.permute(0, 2, 1).contiguous().view(batch, value_channels, height, width)


class SplitHeadsObjectContext(ObjectContext):
    """Our previous primitive: SDPA on contiguous q/k/v, a value ``h`` times the key width
    split into ``h`` key-wide heads with q and k repeated (each similarity computed ``h`` times)."""

    def attend(self, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        batch, key_channels, height, width = key.shape
        value_channels = value.shape[1]
        heads = value_channels // key_channels if value_channels % key_channels == 0 else 1
        query_key = key.flatten(2).transpose(1, 2)  # [B, N, C_k]
        query_key = query_key.unsqueeze(1).repeat(1, heads, 1, 1)  # [B, h, N, C_k]
        value = value.flatten(2).transpose(1, 2)  # [B, N, C_v]
        value = value.reshape(batch, -1, heads, value_channels // heads).transpose(1, 2)
        context = F.scaled_dot_product_attention(query_key, query_key, value.contiguous())
        context = context.transpose(1, 2).reshape(batch, -1, value_channels)  # [B, N, C_v]
        return context.transpose(1, 2).reshape(batch, value_channels, height, width)


BLOCKS = {
    "ours": ObjectContext,
    "split_heads": SplitHeadsObjectContext,
    "naive": NaiveObjectContext,
}


def case(
    impl: str,
    variant: str,
    height: int,
    width: int,
    repeats: int,
    threads: int,
    training: bool = False,
) -> dict[str, float]:
    """Median wall and process-CPU seconds of one block's forward (with ``training``: forward
    and backward of a loss; BN stays in eval mode, the attention's backward is what is
    measured), one warm-up when repeated; run in a fresh process for its peak memory.

    CPU seconds (all threads of this process) are reported too: on a shared machine other
    processes stretch wall time, much less the work this process does."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    key_ch, value_ch, scale = VARIANTS[variant]
    block = BLOCKS[impl](512, key_ch, value_ch, 512, scale=scale).eval()
    torch.nn.init.normal_(block.W.weight, std=0.01)
    x = torch.randn(1, 512, height, width)

    def step() -> None:
        if training:
            block(x).square().mean().backward()
        else:
            block(x)

    wall, cpu = [], []
    with torch.enable_grad() if training else torch.inference_mode():
        if repeats > 1:
            step()
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return {"wall": sorted(wall)[len(wall) // 2], "cpu": sorted(cpu)[len(cpu) // 2]}


def run(quick: bool = False, threads: int = 2, rounds: int = 2) -> list[dict]:
    """Inference at both sizes, training (forward + backward) at the crop size. Each case runs
    ``rounds`` times, the implementations interleaved, and keeps its fastest round: on a shared
    machine the minimum is the least disturbed measurement."""
    sizes = QUICK_SIZES if quick else SIZES
    cases = [(size, False) for size in sizes] + [(sizes[0], True)]
    rows = []
    for (height, width), training in cases:
        repeats = 1 if height * width > 20000 else 3
        for variant in VARIANTS:
            results = {impl: [] for impl in IMPLS}
            for _ in range(rounds):
                for impl in IMPLS:
                    args = (impl, variant, height, width, repeats, threads, training)
                    results[impl].append(run_isolated("bench.attention:case", *args))
            memory = {impl: max(r["delta_mib"] for r in results[impl]) for impl in IMPLS}
            wall = {impl: min(r["result"]["wall"] for r in results[impl]) for impl in IMPLS}
            cpu = {impl: min(r["result"]["cpu"] for r in results[impl]) for impl in IMPLS}
            name = f"{variant} 1x512x{height}x{width}"
            note = f"{threads} threads, median of {repeats}, best of {rounds} rounds"
            step = "forward+backward" if training else "forward"
            for measure, values, unit in (
                (f"{step} peak memory", memory, "MiB"),
                (f"{step} time", wall, "s"),
                (f"{step} CPU time", cpu, "s"),
            ):
                for reference, reference_name in (
                    ("naive", "naive N x N"),
                    ("split_heads", "old split heads"),
                ):
                    rows.append(
                        row(
                            f"{name} {measure}",
                            values["ours"],
                            values[reference],
                            unit,
                            reference_name,
                            note,
                        )
                    )
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small feature maps only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print_rows(run(args.quick, args.threads, args.rounds))
