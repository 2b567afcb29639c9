"""The benchmarks' fresh-process peak memory measures the case, not the process that started it."""

from __future__ import annotations

import numpy as np

from bench.common import run_isolated


def test_peak_of_a_case_ignores_the_parents_size():
    parent = np.ones(768 * 2**20 // 8)  # 768 MiB resident here, before the child is started
    case = run_isolated("bench.common:calibration_case", 200)
    assert case["result"] == 200
    assert 195 <= case["delta_mib"] <= 260, case
    assert case["peak_mib"] < 768, case  # the child's own high-water mark
    del parent
