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
MODEL_CROPS = {True: (65,), False: (129, 257)}
MODEL_NAME = "resnet101_asp_oc_dsn"


def _norm_class(norm: str) -> type[nn.Module]:
    import inplace_abn

    return getattr(inplace_abn, NORMS[norm])


def _saved_mib(model: nn.Module, x: torch.Tensor) -> float:
    """MiB of distinct non-parameter storages the graph keeps for the backward (exact, no RSS noise)."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x.clone())
    return sum(storages.values()) / 2**20


def _time_steps(model: nn.Module, x: torch.Tensor, steps: int) -> float:
    """Best-of-``steps`` seconds of a forward + backward step (after one warm-up step).

    The minimum, not the median: the machine is shared, and other load only ever adds time.
    """

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
    return min(times)


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
    return {"seconds": _time_steps(model, x, steps=3), "saved_mib": _saved_mib(model, x)}


def model_case(norm: str, crop: int) -> dict:
    """Train step of the full segmentation model on a 1 x 3 x crop x crop image."""
    from network import get_segmentation_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = get_segmentation_model(MODEL_NAME, num_classes=19, norm_layer=_norm_class(norm))
    x = torch.randn(1, 3, crop, crop)
    model.train()
    return {"seconds": _time_steps(model, x, steps=2), "saved_mib": _saved_mib(model, x)}


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
        row(
            f"{name}: saved for backward",
            ours["result"]["saved_mib"],
            reference["result"]["saved_mib"],
            "MiB",
            "ABN",
            "activations: distinct storages",
        ),
        row(
            f"{name}: peak memory",
            ours["delta_mib"],
            reference["delta_mib"],
            "MiB",
            "ABN",
            "fresh process, RSS growth",
        ),
        row(
            f"{name}: step time",
            ours["result"]["seconds"],
            reference["result"]["seconds"],
            "s",
            "ABN",
            "best of 2-3 steps, 1 thread",
        ),
    ]


def run(quick: bool = False) -> list[dict]:
    blocks, channels, batch, size = STACK_SIZES[quick]
    stack = f"{blocks} x conv3x3+norm, {batch}x{channels}x{size}x{size}"
    rows = _rows(stack, "bench.inplace_abn_memory:stack_case", (blocks, channels, batch, size))
    reason = _network_available()
    if reason:
        print(f"skipped {MODEL_NAME}: network not available ({reason})")
        return rows
    for crop in MODEL_CROPS[quick]:
        name = f"{MODEL_NAME}, 1x3x{crop}x{crop}"
        rows += _rows(name, "bench.inplace_abn_memory:model_case", (crop,))
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    print_rows(run(parser.parse_args().quick))
