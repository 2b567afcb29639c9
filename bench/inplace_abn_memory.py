"""Peak memory and time of a training step: InPlaceABNSync vs. ABN (BatchNorm2d + activation).

Each case runs in a fresh process (bench.common.run_isolated) so peak resident memory is its own.
Two workloads: a stack of conv3x3 + norm blocks, where activations dominate memory, and the full
resnet101_asp_oc_dsn model on a small CPU crop.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from bench.common import print_rows, row, run_isolated

NORMS = {"inplace": "InPlaceABNSync", "abn": "ABN"}
# (blocks, channels, batch, size) of the conv stack; (crop) of the model case.
STACK_SIZES = {True: (8, 32, 1, 64), False: (16, 32, 2, 128)}
MODEL_CROP = {True: 65, False: 129}
MODEL_NAME = "resnet101_asp_oc_dsn"


def _norm_class(norm: str) -> type[nn.Module]:
    import inplace_abn

    return getattr(inplace_abn, NORMS[norm])


def _time_steps(model: nn.Module, x: torch.Tensor, steps: int) -> float:
    """Median seconds of a forward + backward step (after one warm-up step)."""

    def one_step() -> None:
        outputs = model(x.clone())
        outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
        loss = sum(o.float().square().mean() for o in outputs)
        model.zero_grad(set_to_none=True)
        loss.backward()

    one_step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        one_step()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def stack_case(norm: str, blocks: int, channels: int, batch: int, size: int) -> dict:
    """Train step of ``blocks`` x (conv3x3 -> norm + leaky ReLU); runs in a fresh process."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    norm_class = _norm_class(norm)
    layers = []
    for _ in range(blocks):
        layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=False), norm_class(channels)]
    model = nn.Sequential(*layers).train()
    x = torch.randn(batch, channels, size, size)
    return {"seconds": _time_steps(model, x, steps=3)}


def model_case(norm: str, crop: int) -> dict:
    """Train step of the full segmentation model on a 1 x 3 x crop x crop image."""
    from network import get_segmentation_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = get_segmentation_model(MODEL_NAME, num_classes=19, norm_layer=_norm_class(norm))
    x = torch.randn(1, 3, crop, crop)
    return {"seconds": _time_steps(model.train(), x, steps=1)}


def _network_available() -> str:
    """Empty string when the model can be built, else why not (the case is then skipped)."""
    try:
        from network import get_segmentation_model

        get_segmentation_model(MODEL_NAME, num_classes=19)
    except (ImportError, AttributeError, NotImplementedError) as error:
        return f"{type(error).__name__}: {error}"
    return ""


def _rows(name: str, target: str, args: tuple) -> list[dict]:
    ours = run_isolated(target, "inplace", *args)
    reference = run_isolated(target, "abn", *args)
    return [
        row(f"{name}: peak memory", ours["delta_mib"], reference["delta_mib"], "MiB", "ABN"),
        row(
            f"{name}: step time",
            ours["result"]["seconds"],
            reference["result"]["seconds"],
            "s",
            "ABN",
            "median, 1 thread",
        ),
    ]


def run(quick: bool = False) -> list[dict]:
    blocks, channels, batch, size = STACK_SIZES[quick]
    stack = f"{blocks} x conv3x3+norm, {batch}x{channels}x{size}x{size}"
    rows = _rows(stack, "bench.inplace_abn_memory:stack_case", (blocks, channels, batch, size))
    crop = MODEL_CROP[quick]
    reason = _network_available()
    if reason:
        print(f"skipped {MODEL_NAME}: network not available ({reason})")
        return rows
    rows += _rows(
        f"{MODEL_NAME}, 1x3x{crop}x{crop}", "bench.inplace_abn_memory:model_case", (crop,)
    )
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    print_rows(run(parser.parse_args().quick))
