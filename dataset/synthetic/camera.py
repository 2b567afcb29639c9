"""The pinhole camera and the canvas it draws on: a label image and an RGB image filled together.

World coordinates are metres: lateral x (right positive), height y above the road, depth z along
the view. The camera sits ``CAMERA_HEIGHT`` above the road looking level, so the horizon is the row
of the vanishing point and a ground point at depth z lies ``focal * CAMERA_HEIGHT / z`` rows below it.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import ArrayLike

from dataset.labels import LABEL_ID

CAMERA_HEIGHT = 1.5  # metres above the road
SHIFT = 4  # sub-pixel bits for cv2 polygon drawing


class Canvas:
    """A label image and an RGB float albedo image drawn together with one camera."""

    def __init__(self, height: int, width: int, horizon: float, center: float, focal: float):
        self.h, self.w = height, width
        self.horizon, self.center, self.focal = horizon, center, focal
        self.label = np.zeros((height, width), np.uint8)
        self.rgb = np.zeros((height, width, 3), np.float32)

    def project(self, x: ArrayLike, y: ArrayLike, z: ArrayLike) -> np.ndarray:
        """World (lateral x, height y, depth z) metres -> image (column, row) pixels."""
        x, y, z = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (x, y, z)))
        u = self.center + self.focal * x / z
        v = self.horizon + self.focal * (CAMERA_HEIGHT - y) / z
        return np.stack([u, v], axis=-1)

    def scale(self, z: float) -> float:
        """Pixels per metre at depth z."""
        return self.focal / z

    def polygons(self, polys: list[np.ndarray], name: str, color: ArrayLike) -> None:
        """Fill image-space polygons with a class and colour (sub-pixel vertices)."""
        pts = [np.round(np.asarray(p) * (1 << SHIFT)).astype(np.int32) for p in polys]
        pts = [p for p in pts if len(p) >= 3]
        if not pts:
            return
        cv2.fillPoly(self.label, pts, int(LABEL_ID[name]), cv2.LINE_8, SHIFT)
        cv2.fillPoly(self.rgb, pts, _cv_color(color), cv2.LINE_8, SHIFT)

    def quad(self, corners_world: np.ndarray, name: str, color: ArrayLike) -> None:
        """Fill a planar world-space polygon (rows of x, y, z) with a class and colour."""
        self.polygons([self.project(*corners_world.T)], name, color)

    def disc(self, center: np.ndarray, radius: float, name: str, color: ArrayLike) -> None:
        """Filled circle in image space (centre in pixels, radius in pixels)."""
        if radius < 0.5:
            return
        c, r = _cv_point(center), _cv_length(radius)
        cv2.circle(self.label, c, r, int(LABEL_ID[name]), -1, cv2.LINE_8, SHIFT)
        cv2.circle(self.rgb, c, r, _cv_color(color), -1, cv2.LINE_8, SHIFT)

    def ring(
        self, center: np.ndarray, radius: float, thickness: float, name: str, color: ArrayLike
    ) -> None:
        """Circle outline in image space (wheels); thickness in whole pixels, at least 1."""
        c, r = _cv_point(center), _cv_length(radius)
        t = max(1, int(round(thickness)))
        cv2.circle(self.label, c, r, int(LABEL_ID[name]), t, cv2.LINE_8, SHIFT)
        cv2.circle(self.rgb, c, r, _cv_color(color), t, cv2.LINE_8, SHIFT)

    def line(
        self, p0: np.ndarray, p1: np.ndarray, thickness: float, name: str, color: ArrayLike
    ) -> None:
        """Straight segment in image space (bicycle frame, legs); thickness in whole pixels."""
        a, b = _cv_point(p0), _cv_point(p1)
        t = max(1, int(round(thickness)))
        cv2.line(self.label, a, b, int(LABEL_ID[name]), t, cv2.LINE_8, SHIFT)
        cv2.line(self.rgb, a, b, _cv_color(color), t, cv2.LINE_8, SHIFT)


def _cv_point(point: np.ndarray) -> tuple[int, int]:
    """Image (column, row) pixels -> cv2 fixed point with ``SHIFT`` fractional bits."""
    return int(round(point[0] * (1 << SHIFT))), int(round(point[1] * (1 << SHIFT)))


def _cv_length(length: float) -> int:
    return int(round(length * (1 << SHIFT)))


def _cv_color(color: ArrayLike) -> tuple[float, ...]:
    return tuple(float(c) for c in color)


def jitter(rng: np.random.Generator, color: ArrayLike, amount: float = 18.0) -> np.ndarray:
    """``color`` plus Gaussian noise per channel, so no two instances share exactly one colour."""
    return np.clip(np.asarray(color, np.float32) + rng.normal(0, amount, 3), 0, 255)


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Smooth unit-variance noise with features about ``cell`` pixels wide."""
    small = rng.standard_normal((max(2, height // cell + 2), max(2, width // cell + 2)))
    field = cv2.resize(small.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    return field / (field.std() + 1e-6)
