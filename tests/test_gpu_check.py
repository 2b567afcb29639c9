"""``sh bench/gpu_check.sh --dry-run``: the GPU check end to end on the CPU, so it cannot rot.

It runs ``python -m bench --only gpu --quick --device cpu`` (the same code as on a GPU, small
sizes) and ``pytest -m cuda`` (every test skips without a GPU), and writes one report.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from bench.gpu import QUICK, models

REPO = Path(__file__).resolve().parents[1]
CASES = ("train fp32", "train fp32 + recompute", "train bf16", "train bf16 + recompute")


def test_dry_run_writes_a_report_with_every_row_and_the_skipped_cuda_tests(tmp_path):
    env = {**os.environ, "GPU_CHECK_DIR": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(
        ["sh", "bench/gpu_check.sh", "--dry-run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = tmp_path / "report.md"
    assert f"report: {report}" in proc.stdout
    text = report.read_text()
    assert "Mode: dry run" in text
    assert re.search(r"## Failures\n\nnone\n", text), text

    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 8 and cells[0] != "model":
            rows[cells[0], cells[1].split(" (")[0]] = cells
    for name in models(QUICK):
        for case in (*CASES, "whole frame fp32"):
            cells = rows[name, case]
            assert float(cells[2]) > 0 and float(cells[3]) > 0, cells  # ms, images/s
    # Every CUDA test is reported as skipped, with its reason.
    skipped = re.findall(r"^SKIPPED \[(\d+)\] tests/test_cuda.py:\d+: no CUDA device$", text, re.M)
    assert skipped and "passed" not in text.split("## CUDA tests")[1].split("##")[0]
    assert re.search(rf"{sum(map(int, skipped))} skipped", text)
