"""Training step with and without ``--recompute``: peak memory, activation memory, time per step.

Each row pair is one method of ``resnet101_*`` on one 769x769 crop (batch 1, the original's
recipe per process), with the model, loss and SGD optimizer ``train.py`` builds.

Memory: one fresh process per case (``bench.common.run_isolated``). It is the resident set of the
process, read from ``/proc/self/status`` around one step, with glibc told to hand every freed
block above 64 KiB back to the system at once (``mallopt(M_MMAP_THRESHOLD)``), so that the
resident set follows the live tensors rather than what the allocator keeps cached:

- peak memory: the step's peak above the process before the model was built;
- activation memory: the step's peak above the resident set just before it, which already holds
  the weights, their gradients (of the step before) and the SGD momentum buffers.

Time: one fresh process per method holds both models (same weights) and alternates their steps,
so that both see the same load on a shared machine; each is the best CPU time of the process
(one thread) over ``TIMED_STEPS`` steps after one of warm-up. ``quick=True`` uses 257x257 crops.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import time

import torch

from bench.common import print_rows, row, run_isolated

CROPS = {True: 257, False: 769}
NETWORK = "resnet101"
TIMED_STEPS = 2
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MEASURE_THRESHOLD = 64 * 1024  # blocks above this are unmapped when freed: exact resident set


def _status_mib(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Start a new VmHWM (peak resident set) measurement (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
        clear_refs.write("5")


def _setup(method: str, crop: int):
    """The model, a step function (returns its CPU seconds) and the optimizer of ``method``."""
    from network import get_segmentation_model, method_spec
    from utils.criterion import SegmentationLoss

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = get_segmentation_model(f"{NETWORK}_{method}", num_classes=19).train()
    spec = method_spec(method)
    criterion = SegmentationLoss(19, aux_weight=0.4 if spec.has_aux else None)
    image = torch.randn(1, 3, crop, crop)
    label = torch.randint(0, 19, (1, crop, crop))
    return model, criterion, image, label


def _trainer(model, criterion, image, label):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    # Gradients and momentum buffers exist before the measured steps, as in every step but the
    # first (a step with zero gradients allocates them without a forward).
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()

    def one_step() -> float:
        start = time.process_time()
        loss = sum(criterion.terms(model(image), label).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.process_time() - start

    return one_step


def memory_case(method: str, recompute: bool, crop: int) -> dict:
    """Peak and activation memory of one step; runs in a fresh process."""
    from utils.recompute import enable_recompute

    ctypes.CDLL(ctypes.util.find_library("c")).mallopt(M_MMAP_THRESHOLD, MEASURE_THRESHOLD)
    before_model = _status_mib("VmRSS")
    model, criterion, image, label = _setup(method, crop)
    if recompute:
        enable_recompute(model)
    one_step = _trainer(model, criterion, image, label)
    start_mib = _status_mib("VmRSS")
    _reset_peak()
    one_step()
    peak = _status_mib("VmHWM")
    return {"peak_mib": peak - before_model, "activation_mib": peak - start_mib}


def time_case(method: str, crop: int) -> dict:
    """Best CPU seconds per step without and with recomputation, steps alternating."""
    from utils.recompute import enable_recompute

    model, criterion, image, label = _setup(method, crop)
    recomputed = copy.deepcopy(model)
    enable_recompute(recomputed)
    steps = {
        "plain": _trainer(model, criterion, image, label),
        "recompute": _trainer(recomputed, criterion, image, label),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for repeat in range(1 + TIMED_STEPS):
        for name, one_step in steps.items():
            seconds = one_step()
            if repeat:  # the first is warm-up
                times[name].append(seconds)
    # The minimum, not the median: other load on the machine only ever adds time.
    return {name: min(values) for name, values in times.items()}


def method_rows(method: str, crop: int) -> list[dict]:
    plain, ours = (
        run_isolated("bench.train_step_memory:memory_case", method, recompute, crop)["result"]
        for recompute in (False, True)
    )
    seconds = run_isolated("bench.train_step_memory:time_case", method, crop)["result"]
    name = f"{NETWORK}_{method} 1x3x{crop}x{crop}"
    return [
        row(f"{name}: peak memory", ours["peak_mib"], plain["peak_mib"], "MiB", "no recompute",
            "fresh process, resident set"),
        row(f"{name}: activation memory", ours["activation_mib"], plain["activation_mib"],
            "MiB", "no recompute", "peak minus weights, grads, momentum"),
        row(f"{name}: time per step", seconds["recompute"], seconds["plain"], "s",
            "no recompute", f"CPU time, best of {TIMED_STEPS} alternating steps, 1 thread"),
    ]  # fmt: skip


def run(quick: bool = False) -> list[dict]:
    from network import METHODS

    rows = []
    for method in METHODS:
        rows += method_rows(method, CROPS[quick])
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="257x257 crops")
    print_rows(run(parser.parse_args().quick))
