"""Object-context attention: our SDPA path vs. the original's explicit N x N similarity map.

Peak memory (fresh process per case) and forward time of one ObjectContext block, 512 input
channels, at the feature size of a full 1024x2048 Cityscapes image (128x256) and of a 769 crop
(97x97). Inference only (``torch.inference_mode``), CPU, float32.
"""

from __future__ import annotations

import time

import torch

from bench.common import print_rows, row, run_isolated
from oc_module import ObjectContext

# (label, key width, value width, pooling scale): Base-OC's block and ASP-OC's context block,
# plus ASP-OC's widths without pooling (where splitting the value into heads matters most).
VARIANTS = {
    "base_oc": (256, 256, 1),
    "asp_oc_context": (256, 512, 2),
    "asp_oc_widths_unpooled": (256, 512, 1),
}
SIZES = [(97, 97), (128, 256)]
QUICK_SIZES = [(33, 33), (48, 64)]


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


def case(impl: str, variant: str, height: int, width: int, repeats: int, threads: int) -> float:
    """Median forward seconds of one block (one warm-up when repeated); run in a fresh process
    for its peak memory."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    key_ch, value_ch, scale = VARIANTS[variant]
    cls = ObjectContext if impl == "sdpa" else NaiveObjectContext
    block = cls(512, key_ch, value_ch, 512, scale=scale).eval()
    torch.nn.init.normal_(block.W.weight, std=0.01)
    x = torch.randn(1, 512, height, width)
    times = []
    with torch.inference_mode():
        if repeats > 1:
            block(x)
        for _ in range(repeats):
            start = time.perf_counter()
            block(x)
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def run(quick: bool = False, threads: int = 2) -> list[dict]:
    rows = []
    for height, width in QUICK_SIZES if quick else SIZES:
        repeats = 1 if height * width > 20000 else 3
        for variant in VARIANTS:
            result = {
                impl: run_isolated(
                    "bench.attention:case", impl, variant, height, width, repeats, threads
                )
                for impl in ("sdpa", "naive")
            }
            name = f"{variant} 1x512x{height}x{width}"
            note = f"{threads} threads, median of {repeats}"
            rows.append(
                row(
                    f"{name} peak memory",
                    result["sdpa"]["delta_mib"],
                    result["naive"]["delta_mib"],
                    "MiB",
                    "naive N x N",
                    note,
                )
            )
            rows.append(
                row(
                    f"{name} forward time",
                    result["sdpa"]["result"],
                    result["naive"]["result"],
                    "s",
                    "naive N x N",
                    note,
                )
            )
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small feature maps only")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print_rows(run(args.quick, args.threads))
