"""Fixtures shared by several test modules."""

from pathlib import Path

import cv2
import numpy as np
import pytest


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
