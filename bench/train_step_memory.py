"""Training step with and without ``--recompute``: peak memory, activation memory, time per step.

Each row pair is one method of ``resnet101_*`` on one 769x769 crop (batch 1, the original's
recipe per process) with the model, loss and SGD optimizer ``train.py`` builds, every case in a
fresh process (``bench.common.run_isolated``).

Memory is the resident set of the process, read from ``/proc/self/status`` around one step run
with glibc told to hand every freed block above 64 KiB back to the system at once
(``mallopt(M_MMAP_THRESHOLD)``), so that the resident set follows the live tensors rather than
what the allocator keeps cached:

- peak memory: the step's peak above the process before the model was built;
- activation memory: the step's peak above the resident set just before it, which already holds
  the weights, their gradients (of the step before) and the SGD momentum buffers.

Time is the CPU time of the process (one thread) in further steps, with large blocks served from
the heap again (as glibc's adaptive threshold settles by itself), after one step of warm-up: on a
shared machine CPU time does not count the time other processes hold the core.

The plain and the recomputing case of a method run back to back, so the ratio compares like with
like on a shared machine. ``quick=True`` uses a 257x257 crop.
"""

from __future__ import annotations

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
TIMING_THRESHOLD = 32 * 2**20  # glibc's adaptive threshold ceiling (64-bit): heap reuse


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


def step_case(method: str, recompute: bool, crop: int, threads: int = 1) -> dict:
    """Train steps of ``resnet101_<method>`` on a 1 x 3 x crop x crop image; in a fresh process."""
    from network import get_segmentation_model, method_spec
    from utils.criterion import SegmentationLoss
    from utils.recompute import enable_recompute

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallopt(M_MMAP_THRESHOLD, MEASURE_THRESHOLD)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    before_model = _status_mib("VmRSS")
    model = get_segmentation_model(f"{NETWORK}_{method}", num_classes=19).train()
    if recompute:
        enable_recompute(model)
    spec = method_spec(method)
    criterion = SegmentationLoss(19, aux_weight=0.4 if spec.has_aux else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    image = torch.randn(1, 3, crop, crop)
    label = torch.randint(0, 19, (1, crop, crop))
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

    start_mib = _status_mib("VmRSS")
    _reset_peak()
    one_step()
    peak = _status_mib("VmHWM")

    libc.mallopt(M_MMAP_THRESHOLD, TIMING_THRESHOLD)
    one_step()  # warm-up: the heap grows to the step's needs
    # The minimum, not the median: the machine is shared, and other load only ever adds time.
    seconds = min(one_step() for _ in range(TIMED_STEPS))
    return {
        "seconds": seconds,
        "peak_mib": peak - before_model,
        "activation_mib": peak - start_mib,
    }


def method_rows(method: str, crop: int) -> list[dict]:
    plain, ours = (
        run_isolated("bench.train_step_memory:step_case", method, recompute, crop)["result"]
        for recompute in (False, True)
    )
    name = f"{NETWORK}_{method} 1x3x{crop}x{crop}"
    return [
        row(f"{name}: peak memory", ours["peak_mib"], plain["peak_mib"], "MiB", "no recompute",
            "fresh process, resident set"),
        row(f"{name}: activation memory", ours["activation_mib"], plain["activation_mib"],
            "MiB", "no recompute", "peak minus weights, grads, momentum"),
        row(f"{name}: time per step", ours["seconds"], plain["seconds"], "s", "no recompute",
            f"CPU time, best of {TIMED_STEPS} steps, 1 thread"),
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
