"""Procedural street scenes in the Cityscapes layout, for demos and tests without the real data.

    python -m dataset.synthetic --out DIR --train 48 --val 8 --test 8 --height 256 --width 512

Each scene is a small 3-D world seen by a pinhole camera 1.5 m above a flat road: the ground
(road with lane marks, sidewalk tiles, grass) is classified per pixel from its ground-plane
coordinates, and facades, trees, poles, signs, lights, vehicles, people and cyclists are planar
polygons drawn far to near. Sizes shrink with distance and everything converges on one vanishing
point, so a class is told apart by appearance (tiles vs asphalt, leaves vs grass) *and* context
(a wall is low and beside the sidewalk, a sign sits on a pole, a rider sits on a bicycle).
Labels are real Cityscapes label ids, including void ids (ego vehicle, out of roi, static) that
training ignores. Output is byte-identical for a seed: every scene draws from its own
``np.random.default_rng([seed, split, index])``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

from dataset.labels import LABEL_ID
from dataset.make_lists import make_lists
from utils.fileio import atomic_write
from dataset.palette import labelid_palette

SPLIT_CITIES = {
    "train": ("aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt"),
    "val": ("frankfurt", "lindau", "munster"),
    "test": ("berlin", "bielefeld", "bonn", "leverkusen", "mainz", "munich"),
}
SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}

CAMERA_HEIGHT = 1.5  # metres above the road
SHIFT = 4  # sub-pixel bits for cv2 polygon drawing
ID = LABEL_ID

# Per-class texture strength: fine grain, mid-scale blotches (leaves, stains), large-scale shading.
_FINE = np.zeros(256, np.float32)
_MID = np.zeros(256, np.float32)
_LOW = np.zeros(256, np.float32)
for _name, _fine, _mid, _low in (
    ("road", 0.07, 0.05, 0.10),
    ("sidewalk", 0.05, 0.04, 0.06),
    ("building", 0.04, 0.06, 0.08),
    ("wall", 0.08, 0.08, 0.06),
    ("fence", 0.03, 0.02, 0.02),
    ("vegetation", 0.10, 0.45, 0.15),
    ("terrain", 0.16, 0.10, 0.12),
    ("sky", 0.01, 0.02, 0.03),
    ("pole", 0.02, 0.02, 0.02),
    ("car", 0.02, 0.02, 0.04),
    ("truck", 0.03, 0.03, 0.04),
    ("bus", 0.02, 0.02, 0.04),
    ("person", 0.04, 0.05, 0.02),
    ("rider", 0.04, 0.05, 0.02),
    ("static", 0.06, 0.06, 0.02),
):
    _FINE[ID[_name]], _MID[ID[_name]], _LOW[ID[_name]] = _fine, _mid, _low


class Canvas:
    """A label image and an RGB float albedo image drawn together with one camera."""

    def __init__(self, height: int, width: int, horizon: float, center: float, focal: float):
        self.h, self.w = height, width
        self.horizon, self.center, self.focal = horizon, center, focal
        self.label = np.zeros((height, width), np.uint8)
        self.rgb = np.zeros((height, width, 3), np.float32)

    def project(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """World (lateral x, height y, depth z) metres -> image (column, row) pixels."""
        x, y, z = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (x, y, z)))
        u = self.center + self.focal * x / z
        v = self.horizon + self.focal * (CAMERA_HEIGHT - y) / z
        return np.stack([u, v], axis=-1)

    def scale(self, z: float) -> float:
        """Pixels per metre at depth z."""
        return self.focal / z

    def polygons(self, polys: list[np.ndarray], name: str, color) -> None:
        """Fill image-space polygons with a class and colour (sub-pixel vertices)."""
        pts = [np.round(np.asarray(p) * (1 << SHIFT)).astype(np.int32) for p in polys]
        pts = [p for p in pts if len(p) >= 3]
        if not pts:
            return
        cv2.fillPoly(self.label, pts, int(ID[name]), cv2.LINE_8, SHIFT)
        cv2.fillPoly(self.rgb, pts, tuple(float(c) for c in color), cv2.LINE_8, SHIFT)

    def quad(self, corners_world: np.ndarray, name: str, color) -> None:
        self.polygons([self.project(*corners_world.T)], name, color)

    def disc(self, center, radius: float, name: str, color) -> None:
        """Filled circle in image space (centre in pixels, radius in pixels)."""
        if radius < 0.5:
            return
        c = (int(round(center[0] * 16)), int(round(center[1] * 16)))
        r = int(round(radius * 16))
        cv2.circle(self.label, c, r, int(ID[name]), -1, cv2.LINE_8, SHIFT)
        cv2.circle(self.rgb, c, r, tuple(float(v) for v in color), -1, cv2.LINE_8, SHIFT)

    def ring(self, center, radius: float, thickness: float, name: str, color) -> None:
        c = (int(round(center[0] * 16)), int(round(center[1] * 16)))
        r = int(round(radius * 16))
        t = max(1, int(round(thickness)))
        cv2.circle(self.label, c, r, int(ID[name]), t, cv2.LINE_8, SHIFT)
        cv2.circle(self.rgb, c, r, tuple(float(v) for v in color), t, cv2.LINE_8, SHIFT)

    def line(self, p0, p1, thickness: float, name: str, color) -> None:
        a = (int(round(p0[0] * 16)), int(round(p0[1] * 16)))
        b = (int(round(p1[0] * 16)), int(round(p1[1] * 16)))
        t = max(1, int(round(thickness)))
        cv2.line(self.label, a, b, int(ID[name]), t, cv2.LINE_8, SHIFT)
        cv2.line(self.rgb, a, b, tuple(float(v) for v in color), t, cv2.LINE_8, SHIFT)


def _jitter(rng: np.random.Generator, color, amount: float = 18.0) -> np.ndarray:
    return np.clip(np.asarray(color, np.float32) + rng.normal(0, amount, 3), 0, 255)


def _noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Smooth unit-variance noise with features about ``cell`` pixels wide."""
    small = rng.standard_normal((max(2, height // cell + 2), max(2, width // cell + 2)))
    field = cv2.resize(small.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    return field / (field.std() + 1e-6)


def _ground(canvas: Canvas, rng: np.random.Generator, layout: dict) -> None:
    """Classify every pixel below the horizon by its ground-plane position."""
    h, w = canvas.h, canvas.w
    rows = np.arange(h, dtype=np.float32)[:, None] + 0.5
    cols = np.arange(w, dtype=np.float32)[None, :] + 0.5
    below = np.broadcast_to(rows > canvas.horizon + 0.5, (h, w))
    depth = np.where(
        below, canvas.focal * CAMERA_HEIGHT / np.maximum(rows - canvas.horizon, 1e-3), 1e9
    )
    lateral = (cols - canvas.center) * depth / canvas.focal
    label = canvas.label
    rgb = canvas.rgb

    road_l, road_r = layout["road_left"], layout["road_right"]
    side_l, side_r = layout["sidewalk_left"], layout["sidewalk_right"]
    grass_l, grass_r = layout["grass_left"], layout["grass_right"]
    is_road = below & (lateral >= -road_l) & (lateral <= road_r)
    is_side = below & ~is_road & (lateral >= -road_l - side_l) & (lateral <= road_r + side_r)
    is_grass = below & ~is_road & ~is_side
    is_grass &= (lateral >= -road_l - side_l - grass_l) & (lateral <= road_r + side_r + grass_r)
    beyond = below & ~is_road & ~is_side & ~is_grass  # under the facades; covered later

    road_color = _jitter(rng, (88, 86, 92), 10)
    side_color = _jitter(rng, (168, 150, 152), 14)
    grass_color = _jitter(rng, (128, 160, 70), 14)
    label[is_road] = ID["road"]
    rgb[is_road] = road_color
    label[is_side | beyond] = ID["sidewalk"]
    rgb[is_side | beyond] = side_color
    label[is_grass] = ID["terrain"]
    rgb[is_grass] = grass_color

    # Sidewalk tiles: perspective-correct 0.5 m grid; the curb is a brighter 0.2 m strip.
    tile = 0.5
    grout = (np.abs((lateral / tile) - np.round(lateral / tile)) < 0.06) | (
        np.abs((depth / tile) - np.round(depth / tile)) < 0.06 * np.minimum(1.0, 8.0 / depth)
    )
    curb = (lateral < -road_l) & (lateral > -road_l - 0.2) | (lateral > road_r) & (
        lateral < road_r + 0.2
    )
    rgb[is_side & grout & (depth < 40)] *= 0.78
    rgb[is_side & curb] = _jitter(rng, (200, 196, 190), 8)

    # Lane marks: dashed centre line(s) and solid edge lines, fading with distance.
    paint = np.zeros_like(below)
    near = depth < 70
    width = 0.12
    for lane_x in layout["lanes"]:
        dash = (np.mod(depth + layout["dash_phase"], 9.0) < 3.0) & (
            np.abs(lateral - lane_x) < width
        )
        paint |= dash & near
    paint |= near & (
        (np.abs(lateral + road_l - 0.35) < width) | (np.abs(lateral - road_r + 0.35) < width)
    )
    if layout["crosswalk"] is not None:
        z0 = layout["crosswalk"]
        stripes = (depth > z0) & (depth < z0 + 3.0) & (np.mod(lateral, 1.0) < 0.5)
        paint |= stripes
    paint &= is_road
    rgb[paint] = _jitter(rng, (225, 225, 220), 6)

    # Building shadow on the sun's far side of the street.
    if layout["shadow"] != 0:
        s = layout["shadow"]
        shade = below & (lateral * s > 0) & (np.abs(lateral) > layout["shadow_edge"])
        rgb[shade & ~is_grass] *= 0.62
        rgb[shade & is_grass] *= 0.7


def _sky(canvas: Canvas, rng: np.random.Generator) -> None:
    h, w = canvas.h, canvas.w
    top = _jitter(rng, (70, 120, 190), 15)
    bottom = _jitter(rng, (190, 210, 228), 10)
    t = np.clip(np.arange(h, dtype=np.float32) / max(canvas.horizon, 1.0), 0, 1)[:, None, None]
    canvas.rgb[:] = top * (1 - t) + bottom * t
    clouds = np.clip(_noise(rng, h, w, max(8, w // 10)) - 0.6, 0, None)[..., None]
    canvas.rgb += clouds * rng.uniform(20, 55)
    canvas.label[:] = ID["sky"]


def _facade(
    canvas: Canvas, rng, side: int, x: float, z0: float, z1: float, height: float, lit: float
):
    """One building (or wall) face on the plane lateral = side * x between depths z0 and z1."""
    sx = side * x
    corners = np.array([[sx, 0, z0], [sx, height, z0], [sx, height, z1], [sx, 0, z1]])
    base = np.array(
        [(150, 140, 130), (120, 115, 110), (175, 160, 140), (95, 95, 100), (160, 120, 100)]
    )[rng.integers(0, 5)]
    color = _jitter(rng, base, 12) * lit
    canvas.quad(corners, "building", color)
    # Windows: a grid per floor, in facade coordinates so they follow the perspective.
    if canvas.scale(z0) * 1.2 < 1.5:
        return
    glass = _jitter(rng, (60, 70, 85), 10) * lit
    frame_w, floor_h = rng.uniform(2.2, 3.5), rng.uniform(2.8, 3.4)
    win_w, win_h = frame_w * rng.uniform(0.35, 0.6), floor_h * rng.uniform(0.35, 0.55)
    polys = []
    for floor_y in np.arange(
        floor_h * 0.6 + (2.0 if rng.random() < 0.5 else 0), height - 1.5, floor_h
    ):
        for zc in np.arange(z0 + frame_w / 2, z1 - frame_w / 2, frame_w):
            if canvas.scale(zc) * win_w < 1.0:
                break
            quad = np.array(
                [
                    [sx, floor_y, zc - win_w / 2],
                    [sx, floor_y + win_h, zc - win_w / 2],
                    [sx, floor_y + win_h, zc + win_w / 2],
                    [sx, floor_y, zc + win_w / 2],
                ]
            )
            polys.append(canvas.project(*quad.T))
    if polys:
        canvas.polygons(polys, "building", glass)


def _street_side(canvas: Canvas, rng, side: int, x: float, z_near: float, lit: float, items: list):
    """Buildings, walls and their vegetation along one side, far to near (added to ``items``)."""
    z = z_near
    while z < 160:
        length = rng.uniform(8, 26)
        kind = rng.random()
        if kind < 0.12:
            items.append(("wall", side, x, z, z + length, rng.uniform(1.2, 2.5), lit))
            items.append(("hedge", side, x + 1.5, z, z + length, rng.uniform(3, 7), lit))
        else:
            items.append(("facade", side, x, z, z + length, rng.uniform(7, 22), lit))
        z += length


def _tree(canvas: Canvas, rng, x: float, z: float) -> None:
    trunk_h = rng.uniform(2.0, 3.5)
    trunk = np.array(
        [
            [x - 0.15, 0, z],
            [x - 0.15, trunk_h + 0.5, z],
            [x + 0.15, trunk_h + 0.5, z],
            [x + 0.15, 0, z],
        ]
    )
    canvas.quad(trunk, "vegetation", _jitter(rng, (80, 62, 45), 8))
    s = canvas.scale(z)
    leaf = _jitter(rng, (60, 105, 40), 14)
    for _ in range(int(rng.integers(4, 8))):
        cx, cy = x + rng.normal(0, 1.0), trunk_h + rng.uniform(1.0, 3.5)
        c = canvas.project(cx, cy, z)
        canvas.disc(c, rng.uniform(1.0, 2.0) * s, "vegetation", leaf * rng.uniform(0.8, 1.15))


def _hedge(
    canvas: Canvas, rng, side: int, x: float, z0: float, z1: float, height: float, lit: float
):
    """Tree crowns behind a wall: a row of vegetation discs."""
    leaf = _jitter(rng, (55, 100, 40), 14) * lit
    for z in np.arange(z0, z1, 2.0):
        c = canvas.project(side * (x + rng.uniform(0, 2)), height * rng.uniform(0.5, 1.0), z)
        canvas.disc(
            c, rng.uniform(1.5, 3.0) * canvas.scale(z), "vegetation", leaf * rng.uniform(0.85, 1.1)
        )


def _pole(canvas: Canvas, rng, x: float, z: float) -> None:
    height = rng.uniform(3.5, 6.5)
    r = 0.08
    gray = _jitter(rng, (130, 132, 135), 10)
    canvas.quad(
        np.array([[x - r, 0, z], [x - r, height, z], [x + r, height, z], [x + r, 0, z]]),
        "pole",
        gray,
    )
    s = canvas.scale(z)
    kind = rng.random()
    if kind < 0.45:  # traffic sign
        cy = height - rng.uniform(0.3, 1.2)
        c = canvas.project(x, cy, z)
        shape = rng.integers(0, 4)
        size = rng.uniform(0.3, 0.45) * s
        if shape == 0:  # round: red ring, white inside
            canvas.disc(c, size, "traffic sign", (200, 30, 30))
            canvas.disc(c, size * 0.72, "traffic sign", (235, 235, 235))
        elif shape == 1:  # triangle
            tri = np.array([[0, -1], [0.95, 0.7], [-0.95, 0.7]]) * size + c
            canvas.polygons([tri], "traffic sign", (210, 35, 35))
            canvas.polygons([(tri - c) * 0.65 + c], "traffic sign", (240, 240, 235))
        elif shape == 2:  # blue square
            sq = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * size + c
            canvas.polygons([sq], "traffic sign", (30, 80, 190))
            canvas.polygons([(sq - c) * 0.5 + c], "traffic sign", (235, 235, 235))
        else:  # yellow diamond
            dia = np.array([[0, -1.2], [1.2, 0], [0, 1.2], [-1.2, 0]]) * size + c
            canvas.polygons([dia], "traffic sign", (235, 200, 30))
    elif kind < 0.8:  # traffic light on the pole top
        box_w, box_h = 0.35, 0.95
        top = height + 0.1
        box = np.array(
            [
                [x - box_w / 2, top - box_h, z],
                [x - box_w / 2, top, z],
                [x + box_w / 2, top, z],
                [x + box_w / 2, top - box_h, z],
            ]
        )
        canvas.quad(box, "traffic light", _jitter(rng, (35, 38, 35), 5))
        lit = rng.integers(0, 3)
        for k, col in enumerate(((230, 40, 30), (240, 180, 30), (40, 220, 90))):
            c = canvas.project(x, top - box_h * (0.2 + 0.3 * k), z)
            canvas.disc(c, 0.11 * s, "traffic light", col if k == lit else (70, 70, 60))


def _vehicle(canvas: Canvas, rng, x: float, z: float, kind: str) -> None:
    """Rear face (and visible side) of a car, truck or bus whose rear is at depth z."""
    dims = {"car": (1.8, 1.5, 4.5), "truck": (2.5, 3.3, 8.0), "bus": (2.55, 3.2, 12.0)}[kind]
    width, height, length = dims
    width *= rng.uniform(0.92, 1.08)
    palette = [
        (200, 30, 30),
        (30, 60, 160),
        (230, 230, 230),
        (30, 30, 35),
        (160, 165, 170),
        (40, 110, 60),
        (200, 160, 40),
    ]
    body = _jitter(rng, palette[rng.integers(0, len(palette))], 10)
    if kind == "bus":
        body = _jitter(rng, ((220, 200, 40), (200, 40, 40), (230, 230, 230))[rng.integers(0, 3)], 8)
    x0, x1 = x - width / 2, x + width / 2
    # Side face: visible on the side facing the camera axis.
    side_x = x0 if x > 0 else x1
    side = np.array(
        [
            [side_x, 0.25, z],
            [side_x, height, z],
            [side_x, height, z + length],
            [side_x, 0.25, z + length],
        ]
    )
    canvas.quad(side, kind, body * 0.75)
    if kind != "car":
        win = np.array(
            [
                [side_x, height * 0.55, z + 1.0],
                [side_x, height * 0.85, z + 1.0],
                [side_x, height * 0.85, z + length - 0.5],
                [side_x, height * 0.55, z + length - 0.5],
            ]
        )
        canvas.quad(win, kind, (45, 55, 70))
    wheel_r = 0.33 * (1.4 if kind != "car" else 1.0)
    s = canvas.scale(z)
    for dz in (0.8, length - 0.9):
        c = canvas.project(side_x, wheel_r, z + dz)
        canvas.disc(c, wheel_r * canvas.scale(z + dz), kind, (25, 25, 25))
    # Rear face: lower body, cabin with rear window, lights.
    if kind == "car":
        lower = np.array([[x0, 0.25, z], [x0, 0.95, z], [x1, 0.95, z], [x1, 0.25, z]])
        cabin = np.array(
            [
                [x0 + 0.15, 0.95, z + 0.3],
                [x0 + 0.3, height, z + 0.5],
                [x1 - 0.3, height, z + 0.5],
                [x1 - 0.15, 0.95, z + 0.3],
            ]
        )
        canvas.quad(cabin, "car", body)
        glass = np.array(
            [
                [x0 + 0.25, 1.0, z + 0.3],
                [x0 + 0.38, height - 0.08, z + 0.5],
                [x1 - 0.38, height - 0.08, z + 0.5],
                [x1 - 0.25, 1.0, z + 0.3],
            ]
        )
        canvas.quad(glass, "car", (40, 48, 60))
        canvas.quad(lower, "car", body)
    else:
        rear = np.array([[x0, 0.3, z], [x0, height, z], [x1, height, z], [x1, 0.3, z]])
        canvas.quad(rear, kind, body * 0.9)
        if kind == "bus":
            glass = np.array(
                [
                    [x0 + 0.2, 1.6, z],
                    [x0 + 0.2, height - 0.3, z],
                    [x1 - 0.2, height - 0.3, z],
                    [x1 - 0.2, 1.6, z],
                ]
            )
            canvas.quad(glass, "bus", (45, 55, 70))
    for lx in (x0 + 0.2, x1 - 0.2):
        c = canvas.project(lx, 0.8, z)
        canvas.disc(c, 0.12 * s, kind, (210, 20, 20))
    for wx in (x0 + 0.25, x1 - 0.25):  # rear wheels below the body
        q = np.array(
            [
                [wx - 0.12, 0, z + 0.3],
                [wx - 0.12, 0.3, z + 0.3],
                [wx + 0.12, 0.3, z + 0.3],
                [wx + 0.12, 0, z + 0.3],
            ]
        )
        canvas.quad(q, kind, (25, 25, 25))


def _human(canvas: Canvas, rng, x: float, z: float, base_y: float, name: str, seated: bool) -> None:
    """A person (standing) or a rider (seated, legs apart) facing the camera or sideways."""
    height = rng.uniform(1.6, 1.9)
    shirt = _jitter(
        rng,
        (
            (180, 40, 40),
            (40, 70, 150),
            (230, 230, 225),
            (60, 60, 60),
            (200, 150, 40),
            (60, 130, 80),
        )[rng.integers(0, 6)],
        15,
    )
    trousers = _jitter(rng, ((40, 45, 70), (30, 30, 30), (110, 100, 85))[rng.integers(0, 3)], 10)
    skin = _jitter(rng, (220, 180, 150), 20)
    hip = base_y + (0.0 if seated else 0.9 * height / 1.75)
    shoulder = hip + 0.55 * height / 1.75 + (0.55 if seated else 0.0)
    s = canvas.scale(z)
    if not seated:
        for dx in (-0.12, 0.05):
            leg = np.array(
                [
                    [x + dx, base_y, z],
                    [x + dx, hip, z],
                    [x + dx + 0.09, hip, z],
                    [x + dx + 0.09, base_y, z],
                ]
            )
            canvas.quad(leg, name, trousers)
    torso = np.array(
        [[x - 0.2, hip, z], [x - 0.22, shoulder, z], [x + 0.22, shoulder, z], [x + 0.2, hip, z]]
    )
    canvas.quad(torso, name, shirt)
    for dx in (-0.27, 0.2):
        arm = np.array(
            [
                [x + dx, shoulder - 0.6, z],
                [x + dx, shoulder, z],
                [x + dx + 0.07, shoulder, z],
                [x + dx + 0.07, shoulder - 0.6, z],
            ]
        )
        canvas.quad(arm, name, shirt * 0.9)
    head = canvas.project(x, shoulder + 0.14, z)
    canvas.disc(head, 0.12 * s, name, skin)
    if rng.random() < 0.5:
        canvas.disc(head - np.array([0, 0.05 * s]), 0.1 * s, name, _jitter(rng, (50, 35, 25), 10))


def _cyclist(canvas: Canvas, rng, x: float, z: float) -> None:
    """A bicycle crossing the view (wheels side by side) with its rider on the saddle."""
    s = canvas.scale(z)
    r = 0.34
    frame = _jitter(rng, ((30, 30, 30), (180, 30, 40), (40, 80, 160))[rng.integers(0, 3)], 10)
    back, front = canvas.project(x - 0.55, r, z), canvas.project(x + 0.55, r, z)
    thick = max(1.0, 0.06 * s)
    canvas.ring(back, r * s, thick, "bicycle", (20, 20, 20))
    canvas.ring(front, r * s, thick, "bicycle", (20, 20, 20))
    saddle, bar = canvas.project(x - 0.2, 0.95, z), canvas.project(x + 0.45, 1.0, z)
    crank = canvas.project(x, r, z)
    for a, b in (
        (back, crank),
        (crank, saddle),
        (saddle, back),
        (crank, bar),
        (bar, front),
        (saddle, bar),
    ):
        canvas.line(a, b, thick, "bicycle", frame)
    _human(canvas, rng, x - 0.1, z, 0.95, "rider", seated=True)
    knee = canvas.project(x + 0.1, 0.75, z)
    canvas.line(saddle, knee, 0.12 * s, "rider", _jitter(rng, (40, 45, 70), 10))
    canvas.line(knee, crank, 0.1 * s, "rider", _jitter(rng, (40, 45, 70), 10))


def _static_object(canvas: Canvas, rng, x: float, z: float) -> None:
    """Bins and bollards: Cityscapes "static", ignored in training."""
    w, h = rng.uniform(0.4, 0.7), rng.uniform(0.8, 1.1)
    q = np.array([[x - w / 2, 0, z], [x - w / 2, h, z], [x + w / 2, h, z], [x + w / 2, 0, z]])
    canvas.quad(q, "static", _jitter(rng, (70, 90, 70), 20))


def _fence(canvas: Canvas, rng, side: int, x: float, z0: float, z1: float) -> None:
    """A 1.2 m lattice fence on the plane lateral = side * x: label only on the bars."""
    h, w = canvas.h, canvas.w
    corners = np.array(
        [[side * x, 0, z0], [side * x, 1.2, z0], [side * x, 1.2, z1], [side * x, 0, z1]]
    )
    poly = canvas.project(*corners.T)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 1, cv2.LINE_8, SHIFT)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return
    du = xs + 0.5 - canvas.center
    du = np.where(np.abs(du) < 1e-3, 1e-3, du)
    depth = canvas.focal * side * x / du
    height = CAMERA_HEIGHT - (ys + 0.5 - canvas.horizon) * depth / canvas.focal
    bars = (np.mod(depth, 0.35) < 0.07) | (height > 1.05) | (np.abs(height - 0.6) < 0.05)
    bars &= depth > 0
    ys, xs = ys[bars], xs[bars]
    canvas.label[ys, xs] = ID["fence"]
    canvas.rgb[ys, xs] = _jitter(rng, (150, 140, 120), 15)


def render_scene(rng: np.random.Generator, height: int = 256, width: int = 512):
    """One scene: (uint8 HxWx3 BGR image, uint8 HxW Cityscapes label ids)."""
    horizon = height * rng.uniform(0.36, 0.48)
    center = width * rng.uniform(0.42, 0.58)
    focal = width * rng.uniform(0.55, 0.75)
    canvas = Canvas(height, width, horizon, center, focal)
    z_near = focal * CAMERA_HEIGHT / (height - horizon)

    lanes_each = int(rng.integers(1, 3))
    lane_w = rng.uniform(3.0, 3.6)
    road_l = lanes_each * lane_w + rng.uniform(-0.5, 1.0)
    road_r = lanes_each * lane_w + rng.uniform(-0.5, 1.0)
    layout = {
        "road_left": road_l,
        "road_right": road_r,
        "sidewalk_left": rng.uniform(2.0, 4.5),
        "sidewalk_right": rng.uniform(2.0, 4.5),
        "grass_left": rng.uniform(2.5, 7.0) if rng.random() < 0.6 else 0.0,
        "grass_right": rng.uniform(2.5, 7.0) if rng.random() < 0.6 else 0.0,
        "lanes": [k * lane_w for k in range(-lanes_each + 1, lanes_each)],
        "dash_phase": rng.uniform(0, 9),
        "crosswalk": rng.uniform(8, 25) if rng.random() < 0.25 else None,
        "shadow": int(rng.choice([-1, 0, 1])),
    }
    house_l = road_l + layout["sidewalk_left"] + layout["grass_left"]
    house_r = road_r + layout["sidewalk_right"] + layout["grass_right"]
    layout["shadow_edge"] = rng.uniform(0.3, 0.9) * (house_l if layout["shadow"] < 0 else house_r)

    _sky(canvas, rng)
    # Distant skyline at the end of the street.
    for _ in range(int(rng.integers(4, 10))):
        bx, bw = rng.uniform(-60, 60), rng.uniform(10, 30)
        bh = rng.uniform(8, 40)
        z = rng.uniform(170, 230)
        quad = np.array([[bx, 0, z], [bx, bh, z], [bx + bw, bh, z], [bx + bw, 0, z]])
        canvas.quad(quad, "building", _jitter(rng, (150, 150, 155), 15))
    _ground(canvas, rng, layout)

    sun = -layout["shadow"] if layout["shadow"] else 1
    items: list = []
    _street_side(canvas, rng, -1, house_l, z_near * 0.5, 1.0 if sun < 0 else 0.7, items)
    _street_side(canvas, rng, 1, house_r, z_near * 0.5, 1.0 if sun > 0 else 0.7, items)
    drawn = []  # (depth, callable) drawn far to near
    for item in items:
        kind, side, x, z0, z1, h, lit = item
        if kind == "facade":
            drawn.append(
                (z0, lambda a=item: _facade(canvas, rng, a[1], a[2], a[3], a[4], a[5], a[6]))
            )
        elif kind == "wall":
            drawn.append(
                (z0, lambda a=item: _wall(canvas, rng, a[1], a[2], a[3], a[4], a[5], a[6]))
            )
        else:
            drawn.append(
                (z0 + 0.01, lambda a=item: _hedge(canvas, rng, a[1], a[2], a[3], a[4], a[5], a[6]))
            )

    z_min = max(z_near * 1.05, 3.0)
    for side, road, walk, grass in (
        (-1, road_l, layout["sidewalk_left"], layout["grass_left"]),
        (1, road_r, layout["sidewalk_right"], layout["grass_right"]),
    ):
        for _ in range(int(rng.integers(2, 6))):
            z = rng.uniform(z_min + 2, 70)
            drawn.append((z, lambda x=side * (road + 0.4), z=z: _pole(canvas, rng, x, z)))
        for _ in range(int(rng.integers(1, 5))):
            z = rng.uniform(z_min + 3, 60)
            tx = side * (road + walk + (grass * 0.5 if grass else -0.6))
            drawn.append((z, lambda x=tx, z=z: _tree(canvas, rng, x, z)))
        for _ in range(int(rng.integers(0, 5))):
            z = rng.uniform(z_min + 1, 40)
            px = side * (road + rng.uniform(0.6, walk - 0.3))
            drawn.append((z, lambda x=px, z=z: _human(canvas, rng, x, z, 0.0, "person", False)))
        if rng.random() < 0.4:
            z = rng.uniform(z_min + 1, 50)
            drawn.append(
                (z, lambda x=side * (road + walk - 0.4), z=z: _static_object(canvas, rng, x, z))
            )
        if rng.random() < 0.35:
            z0 = rng.uniform(z_min, 30)
            fx = road + walk
            drawn.append(
                (
                    z0,
                    lambda s=side, x=fx, z0=z0: _fence(
                        canvas, rng, s, x, z0, z0 + rng.uniform(6, 20)
                    ),
                )
            )
        for _ in range(int(rng.integers(0, 3))):  # parked cars along the curb
            z = rng.uniform(z_min + 1, 60)
            drawn.append((z, lambda x=side * (road - 1.2), z=z: _vehicle(canvas, rng, x, z, "car")))
    for _ in range(int(rng.integers(1, 5))):  # traffic in the lanes
        lane = rng.uniform(-road_l + 1.5, road_r - 1.5)
        z = rng.uniform(z_min + 2, 80)
        kind = "car" if rng.random() < 0.8 else ("bus" if rng.random() < 0.5 else "truck")
        drawn.append((z, lambda x=lane, z=z, k=kind: _vehicle(canvas, rng, x, z, k)))
    for _ in range(int(rng.integers(0, 3))):
        z = rng.uniform(z_min + 2, 35)
        bx = rng.uniform(-road_l + 0.8, road_r - 0.8)
        drawn.append((z, lambda x=bx, z=z: _cyclist(canvas, rng, x, z)))
    for _, draw in sorted(drawn, key=lambda item: -item[0]):
        draw()

    if rng.random() < 0.7:  # ego vehicle hood at the bottom
        hood = np.array(
            [
                [0, height],
                [width * 0.15, height - height * 0.07],
                [width * 0.85, height - height * 0.07],
                [width, height],
            ]
        ) + np.array([rng.uniform(-0.05, 0.05) * width, 0])
        canvas.polygons([hood], "ego vehicle", _jitter(rng, (40, 40, 45), 8))
    if rng.random() < 0.5:  # a thin out-of-roi frame, as at the rectified image border
        b = max(1, width // 256)
        for sl in (np.s_[:b, :], np.s_[-b:, :], np.s_[:, :b], np.s_[:, -b:]):
            canvas.label[sl] = ID["out of roi"]
            canvas.rgb[sl] = 0

    return _shade(canvas, rng), canvas.label


def _wall(
    canvas: Canvas, rng, side: int, x: float, z0: float, z1: float, height: float, lit: float
):
    sx = side * x
    corners = np.array([[sx, 0, z0], [sx, height, z0], [sx, height, z1], [sx, 0, z1]])
    canvas.quad(corners, "wall", _jitter(rng, (165, 160, 150), 12) * lit)


def _shade(canvas: Canvas, rng: np.random.Generator) -> np.ndarray:
    """Textures by class, lighting and sensor noise -> uint8 BGR image."""
    h, w = canvas.h, canvas.w
    label = canvas.label
    fine = rng.standard_normal((h, w)).astype(np.float32)
    mid = _noise(rng, h, w, max(2, w // 160))
    low = _noise(rng, h, w, max(8, w // 12))
    texture = 1.0 + _FINE[label] * fine + _MID[label] * mid + _LOW[label] * low
    image = canvas.rgb * texture[..., None]
    # Lighting: exposure, colour temperature, a soft left-right gradient and vignetting.
    exposure = rng.uniform(0.7, 1.2)
    tint = np.array([rng.uniform(0.95, 1.05), 1.0, rng.uniform(0.95, 1.05)], np.float32)
    cols = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    rows = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    gradient = 1.0 + rng.uniform(-0.15, 0.15) * cols
    vignette = 1.0 - 0.18 * (cols**2 + rows**2) / 2
    image *= (exposure * gradient * vignette)[..., None] * tint
    image += rng.normal(0, 2.5, image.shape).astype(np.float32)
    return np.clip(image[:, :, ::-1] + 0.5, 0, 255).astype(np.uint8)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_INDEX[split], index])


def scene_name(split: str, index: int) -> tuple[str, str]:
    """(city, file stem) of the index-th scene of a split: cities take turns."""
    cities = SPLIT_CITIES[split]
    city = cities[index % len(cities)]
    return city, f"{city}_{index // len(cities):06d}_000019"


def encode_png(array: np.ndarray, level: int = 3) -> bytes:
    ok, data = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, level])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


def generate(
    out: str | os.PathLike,
    counts: dict[str, int],
    height: int = 256,
    width: int = 512,
    seed: int = 0,
) -> dict[str, int]:
    """Write scenes in the Cityscapes layout under ``out`` plus list files; returns list counts."""
    out = Path(out)
    colors = labelid_palette()[:, ::-1]  # BGR for cv2
    for split, count in counts.items():
        for index in range(count):
            image, label = render_scene(scene_rng(seed, split, index), height, width)
            city, stem = scene_name(split, index)
            image_dir = out / "leftImg8bit" / split / city
            label_dir = out / "gtFine" / split / city
            image_dir.mkdir(parents=True, exist_ok=True)
            label_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(image_dir / f"{stem}_leftImg8bit.png", encode_png(image))
            atomic_write(label_dir / f"{stem}_gtFine_labelIds.png", encode_png(label))
            atomic_write(label_dir / f"{stem}_gtFine_color.png", encode_png(colors[label]))
    return make_lists(out)


def preview(
    path: str | os.PathLike, seed: int = 0, count: int = 3, height: int = 256, width: int = 512
) -> None:
    """A picture of ``count`` scenes (left) beside their colour labels (right)."""
    colors = labelid_palette()[:, ::-1]
    rows = []
    for index in range(count):
        image, label = render_scene(scene_rng(seed, "train", index), height, width)
        gap = np.full((height, 4, 3), 255, np.uint8)
        rows.append(np.concatenate([image, gap, colors[label]], axis=1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, encode_png(np.concatenate(rows[:-1], axis=0), level=9))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write procedural street scenes in the Cityscapes layout."
    )
    parser.add_argument("--out", default=None, help="output root (leftImg8bit/, gtFine/, *.lst)")
    parser.add_argument("--train", type=int, default=48, help="training scenes")
    parser.add_argument("--val", type=int, default=8, help="validation scenes")
    parser.add_argument("--test", type=int, default=8, help="test scenes")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preview", default=None, help="also write a PNG of samples beside labels")
    args = parser.parse_args(argv)
    if args.out is None and args.preview is None:
        parser.error("give --out and/or --preview")
    for flag in ("train", "val", "test", "height", "width"):
        if getattr(args, flag) < 0 or (flag in ("height", "width") and getattr(args, flag) < 32):
            parser.error(f"--{flag} must be {'>= 32' if flag in ('height', 'width') else '>= 0'}")
    if args.out is not None:
        counts = {"train": args.train, "val": args.val, "test": args.test}
        lists = generate(
            args.out, {k: v for k, v in counts.items() if v}, args.height, args.width, args.seed
        )
        print(", ".join(f"{name}.lst: {n}" for name, n in lists.items()))
    if args.preview is not None:
        preview(args.preview, seed=args.seed, height=args.height, width=args.width)
        print(f"wrote {args.preview}")


if __name__ == "__main__":
    main()
