"""The things in a street scene, each drawn by one function ``draw(canvas, rng, ...)``.

Objects are planar polygons and discs in world coordinates (metres), projected by the canvas's
camera, so they shrink with depth. Each function draws its own colours and sizes from ``rng`` in a
fixed order: the order of the calls is part of the output, so a seed always gives the same scene.
"""

from __future__ import annotations

import cv2
import numpy as np

from dataset.labels import LABEL_ID
from dataset.synthetic.camera import CAMERA_HEIGHT, SHIFT, Canvas, jitter, smooth_noise


def sky(canvas: Canvas, rng: np.random.Generator) -> None:
    """Fill the whole canvas with sky: a vertical gradient down to the horizon, and clouds."""
    h, w = canvas.h, canvas.w
    top = jitter(rng, (70, 120, 190), 15)
    bottom = jitter(rng, (190, 210, 228), 10)
    t = np.clip(np.arange(h, dtype=np.float32) / max(canvas.horizon, 1.0), 0, 1)[:, None, None]
    canvas.rgb[:] = top * (1 - t) + bottom * t
    clouds = np.clip(smooth_noise(rng, h, w, max(8, w // 10)) - 0.6, 0, None)[..., None]
    canvas.rgb += clouds * rng.uniform(20, 55)
    canvas.label[:] = LABEL_ID["sky"]


def skyline(canvas: Canvas, rng: np.random.Generator) -> None:
    """Distant buildings at the end of the street, 170-230 m away."""
    for _ in range(int(rng.integers(4, 10))):
        bx, bw = rng.uniform(-60, 60), rng.uniform(10, 30)
        bh = rng.uniform(8, 40)
        z = rng.uniform(170, 230)
        quad = np.array([[bx, 0, z], [bx, bh, z], [bx + bw, bh, z], [bx + bw, 0, z]])
        canvas.quad(quad, "building", jitter(rng, (150, 150, 155), 15))


def facade(
    canvas: Canvas,
    rng: np.random.Generator,
    side: int,
    x: float,
    z0: float,
    z1: float,
    height: float,
    lit: float,
) -> None:
    """One building face on the plane lateral = side * x between depths z0 and z1, with windows.

    ``lit`` darkens the colours on the shaded side of the street.
    """
    sx = side * x
    corners = np.array([[sx, 0, z0], [sx, height, z0], [sx, height, z1], [sx, 0, z1]])
    base = np.array(
        [(150, 140, 130), (120, 115, 110), (175, 160, 140), (95, 95, 100), (160, 120, 100)]
    )[rng.integers(0, 5)]
    color = jitter(rng, base, 12) * lit
    canvas.quad(corners, "building", color)
    # Windows: a grid per floor, in facade coordinates so they follow the perspective.
    if canvas.scale(z0) * 1.2 < 1.5:
        return
    glass = jitter(rng, (60, 70, 85), 10) * lit
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


def wall(
    canvas: Canvas,
    rng: np.random.Generator,
    side: int,
    x: float,
    z0: float,
    z1: float,
    height: float,
    lit: float,
) -> None:
    """A low wall along the sidewalk on the plane lateral = side * x, from depth z0 to z1."""
    sx = side * x
    corners = np.array([[sx, 0, z0], [sx, height, z0], [sx, height, z1], [sx, 0, z1]])
    canvas.quad(corners, "wall", jitter(rng, (165, 160, 150), 12) * lit)


def tree(canvas: Canvas, rng: np.random.Generator, x: float, z: float) -> None:
    """A trunk and a crown of overlapping leaf discs standing at (x, z)."""
    trunk_h = rng.uniform(2.0, 3.5)
    trunk = np.array(
        [
            [x - 0.15, 0, z],
            [x - 0.15, trunk_h + 0.5, z],
            [x + 0.15, trunk_h + 0.5, z],
            [x + 0.15, 0, z],
        ]
    )
    canvas.quad(trunk, "vegetation", jitter(rng, (80, 62, 45), 8))
    s = canvas.scale(z)
    leaf = jitter(rng, (60, 105, 40), 14)
    for _ in range(int(rng.integers(4, 8))):
        cx, cy = x + rng.normal(0, 1.0), trunk_h + rng.uniform(1.0, 3.5)
        c = canvas.project(cx, cy, z)
        canvas.disc(c, rng.uniform(1.0, 2.0) * s, "vegetation", leaf * rng.uniform(0.8, 1.15))


def hedge(
    canvas: Canvas,
    rng: np.random.Generator,
    side: int,
    x: float,
    z0: float,
    z1: float,
    height: float,
    lit: float,
) -> None:
    """Tree crowns behind a wall: a row of vegetation discs."""
    leaf = jitter(rng, (55, 100, 40), 14) * lit
    for z in np.arange(z0, z1, 2.0):
        c = canvas.project(side * (x + rng.uniform(0, 2)), height * rng.uniform(0.5, 1.0), z)
        canvas.disc(
            c, rng.uniform(1.5, 3.0) * canvas.scale(z), "vegetation", leaf * rng.uniform(0.85, 1.1)
        )


def pole(canvas: Canvas, rng: np.random.Generator, x: float, z: float) -> None:
    """A pole at (x, z), carrying a traffic sign, a traffic light or nothing."""
    height = rng.uniform(3.5, 6.5)
    r = 0.08
    gray = jitter(rng, (130, 132, 135), 10)
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
        canvas.quad(box, "traffic light", jitter(rng, (35, 38, 35), 5))
        lit = rng.integers(0, 3)
        for k, col in enumerate(((230, 40, 30), (240, 180, 30), (40, 220, 90))):
            c = canvas.project(x, top - box_h * (0.2 + 0.3 * k), z)
            canvas.disc(c, 0.11 * s, "traffic light", col if k == lit else (70, 70, 60))


def vehicle(canvas: Canvas, rng: np.random.Generator, x: float, z: float, kind: str) -> None:
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
    body = jitter(rng, palette[rng.integers(0, len(palette))], 10)
    if kind == "bus":
        body = jitter(rng, ((220, 200, 40), (200, 40, 40), (230, 230, 230))[rng.integers(0, 3)], 8)
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


def human(
    canvas: Canvas,
    rng: np.random.Generator,
    x: float,
    z: float,
    base_y: float,
    name: str,
    seated: bool,
) -> None:
    """A person (standing) or a rider (seated, legs apart) facing the camera or sideways."""
    height = rng.uniform(1.6, 1.9)
    shirt = jitter(
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
    trousers = jitter(rng, ((40, 45, 70), (30, 30, 30), (110, 100, 85))[rng.integers(0, 3)], 10)
    skin = jitter(rng, (220, 180, 150), 20)
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
        canvas.disc(head - np.array([0, 0.05 * s]), 0.1 * s, name, jitter(rng, (50, 35, 25), 10))


def cyclist(canvas: Canvas, rng: np.random.Generator, x: float, z: float) -> None:
    """A bicycle crossing the view (wheels side by side) with its rider on the saddle."""
    s = canvas.scale(z)
    r = 0.34
    frame = jitter(rng, ((30, 30, 30), (180, 30, 40), (40, 80, 160))[rng.integers(0, 3)], 10)
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
    human(canvas, rng, x - 0.1, z, 0.95, "rider", seated=True)
    knee = canvas.project(x + 0.1, 0.75, z)
    canvas.line(saddle, knee, 0.12 * s, "rider", jitter(rng, (40, 45, 70), 10))
    canvas.line(knee, crank, 0.1 * s, "rider", jitter(rng, (40, 45, 70), 10))


def static_object(canvas: Canvas, rng: np.random.Generator, x: float, z: float) -> None:
    """Bins and bollards: Cityscapes "static", ignored in training."""
    w, h = rng.uniform(0.4, 0.7), rng.uniform(0.8, 1.1)
    q = np.array([[x - w / 2, 0, z], [x - w / 2, h, z], [x + w / 2, h, z], [x + w / 2, 0, z]])
    canvas.quad(q, "static", jitter(rng, (70, 90, 70), 20))


def fence(canvas: Canvas, rng: np.random.Generator, side: int, x: float, z0: float) -> None:
    """A 1.2 m lattice fence, 6-20 m long from depth z0, on the plane lateral = side * x.

    Only the bars are labelled "fence"; what shows between them keeps its own label.
    """
    z1 = z0 + rng.uniform(6, 20)
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
    canvas.label[ys, xs] = LABEL_ID["fence"]
    canvas.rgb[ys, xs] = jitter(rng, (150, 140, 120), 15)


def ego_hood(canvas: Canvas, rng: np.random.Generator) -> None:
    """The bonnet of the recording car along the bottom edge (Cityscapes void "ego vehicle")."""
    height, width = canvas.h, canvas.w
    hood = np.array(
        [
            [0, height],
            [width * 0.15, height - height * 0.07],
            [width * 0.85, height - height * 0.07],
            [width, height],
        ]
    ) + np.array([rng.uniform(-0.05, 0.05) * width, 0])
    canvas.polygons([hood], "ego vehicle", jitter(rng, (40, 40, 45), 8))
