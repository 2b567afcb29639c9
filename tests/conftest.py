"""Fixtures shared by several test modules."""

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test (modules ask for it with ``pytestmark``): the tests share a
    small machine, where two OpenMP threads of a small model mostly wait for each other, and
    several compare results bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_ade_tree(root: Path, counts=(("training", 3), ("validation", 2)), size=(20, 30)) -> Path:
    """A tiny ADEChallengeData2016 tree: three label stripes, 0 (ignored), 1 and 150."""
    rng = np.random.default_rng(4)
    height, width = size
    for split, count in counts:
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for k in range(1, count + 1):
            stem = f"ADE_{'train' if split == 'training' else 'val'}_{k:08d}"
            cv2.imwrite(
                str(root / "images" / split / f"{stem}.jpg"),
                rng.integers(0, 255, (height, width, 3), dtype=np.uint8),
            )
            label = np.zeros((height, width), np.uint8)
            label[:, width // 3 : 2 * width // 3], label[:, 2 * width // 3 :] = 1, 150
            cv2.imwrite(str(root / "annotations" / split / f"{stem}.png"), label)
    return root


@pytest.fixture
def ade(tmp_path):
    return write_ade_tree(tmp_path)
