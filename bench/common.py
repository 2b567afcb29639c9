"""Shared plumbing for benchmarks: fresh-process peak memory and the markdown table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The peak is VmHWM of /proc/self/status, the high-water mark of this process's own memory map.
# Not ru_maxrss: Linux carries it over from the parent through fork and exec, so a child of a
# large benchmark process would report the parent's size as its own peak.
_ISOLATED = """
import importlib, json, resource, sys

def high_water_kib():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

module, function, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
fn = getattr(importlib.import_module(module), function)
baseline = high_water_kib()
result = fn(*args)
peak = high_water_kib()
print("@@RESULT@@" + json.dumps({"result": result, "baseline_mib": baseline / 1024,
                                 "peak_mib": peak / 1024, "delta_mib": (peak - baseline) / 1024}))
"""


def run_isolated(target: str, *args, timeout: float = 1800) -> dict:
    """Call ``package.module:function(*args)`` in a fresh Python process.

    Peak memory must come from a fresh process: the allocator keeps freed pages, so a second case
    in the same process would read the first one's peak. ``delta_mib`` is the peak resident set
    growth during the call (Linux ``VmHWM``); the call's own JSON result is under ``result``.
    """
    module, function = target.split(":")
    proc = subprocess.run(
        [sys.executable, "-c", _ISOLATED, module, function, json.dumps(list(args))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark case {target}{args} failed:\n{proc.stderr[-2000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("@@RESULT@@"))
    return json.loads(line[len("@@RESULT@@") :])


def row(
    name: str, ours: float, reference: float, unit: str, reference_name: str, note: str = ""
) -> dict:
    """One table row; ``ratio`` is ours / reference (below 1 is better for time and memory)."""
    return {
        "benchmark": name,
        "ours": ours,
        "reference": reference,
        "unit": unit,
        "reference_name": reference_name,
        "ratio": ours / reference if reference else float("nan"),
        "note": note,
    }


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| benchmark | ours | reference | ours / reference | note |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['benchmark']} | {r['ours']:.4g} {r['unit']} | {r['reference']:.4g} {r['unit']}"
            f" ({r['reference_name']}) | {r['ratio']:.3g} | {r['note']} |"
        )
    return "\n".join(lines)


def print_rows(rows: list[dict]) -> None:
    print(markdown_table(rows))


def calibration_case(mib: int) -> int:
    """A case of known peak: ``mib`` MiB written once (checks ``run_isolated``'s measure)."""
    block = bytearray(mib * 2**20)
    block[::4096] = b"\1" * len(block[::4096])  # touch every page
    return len(block) // 2**20
