"""One scene from one random stream: camera, street layout, objects far to near, then shading.

Every random draw comes from the ``rng`` given to ``render_scene``, in a fixed order, so
``render_scene(scene_rng(seed, split, index))`` is the same image and labels on every run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dataset.labels import LABEL_ID
from dataset.synthetic import objects
from dataset.synthetic.camera import CAMERA_HEIGHT, Canvas, smooth_noise
from dataset.synthetic.ground import draw_ground, random_layout

SPLIT_INDEX = {"train": 0, "val": 1, "test": 2, "train_extra": 3}

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
    _FINE[LABEL_ID[_name]], _MID[LABEL_ID[_name]], _LOW[LABEL_ID[_name]] = _fine, _mid, _low


@dataclass(frozen=True)
class SceneItem:
    """An object placed in the scene: ``draw(canvas, rng, *args)`` paints it at ``depth`` metres.

    Items are collected first and drawn far to near (painter's algorithm), so nearer objects cover
    farther ones. Drawing is deferred, so each item's own random draws (colours, sizes) happen in
    drawing order.
    """

    depth: float
    draw: Callable[..., None]  # one of the functions in dataset.synthetic.objects
    args: tuple  # the positional arguments after (canvas, rng)

    def paint(self, canvas: Canvas, rng: np.random.Generator) -> None:
        self.draw(canvas, rng, *self.args)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of one scene: independent of every other scene and of the scene count."""
    return np.random.default_rng([seed, SPLIT_INDEX[split], index])


def street_side(
    rng: np.random.Generator, side: int, x: float, z_near: float, lit: float
) -> list[SceneItem]:
    """Buildings, walls and the trees behind the walls along one side of the street, near to far.

    ``side`` is -1 (left) or 1 (right), ``x`` the lateral distance of the facades from the camera
    axis, ``lit`` the brightness of that side (below 1 in the shadow).
    """
    items = []
    z = z_near
    while z < 160:
        length = rng.uniform(8, 26)
        kind = rng.random()
        if kind < 0.12:
            wall_height = rng.uniform(1.2, 2.5)
            items.append(SceneItem(z, objects.wall, (side, x, z, z + length, wall_height, lit)))
            # Trees 0.01 m farther than the wall: drawn before it, so the wall covers their foot.
            crown_height = rng.uniform(3, 7)
            items.append(
                SceneItem(
                    z + 0.01, objects.hedge, (side, x + 1.5, z, z + length, crown_height, lit)
                )
            )
        else:
            height = rng.uniform(7, 22)
            items.append(SceneItem(z, objects.facade, (side, x, z, z + length, height, lit)))
        z += length
    return items


def render_scene(
    rng: np.random.Generator, height: int = 256, width: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (uint8 HxWx3 BGR image, uint8 HxW Cityscapes label ids)."""
    horizon = height * rng.uniform(0.36, 0.48)
    center = width * rng.uniform(0.42, 0.58)
    focal = width * rng.uniform(0.55, 0.75)
    canvas = Canvas(height, width, horizon, center, focal)
    z_near = focal * CAMERA_HEIGHT / (height - horizon)  # depth of the bottom image row
    layout = random_layout(rng)

    objects.sky(canvas, rng)
    objects.skyline(canvas, rng)
    draw_ground(canvas, rng, layout)

    sun = -layout.shadow if layout.shadow else 1
    items = street_side(rng, -1, layout.house_left, z_near * 0.5, 1.0 if sun < 0 else 0.7)
    items += street_side(rng, 1, layout.house_right, z_near * 0.5, 1.0 if sun > 0 else 0.7)

    z_min = max(z_near * 1.05, 3.0)
    for side, road, walk, grass in (
        (-1, layout.road_left, layout.sidewalk_left, layout.grass_left),
        (1, layout.road_right, layout.sidewalk_right, layout.grass_right),
    ):
        for _ in range(int(rng.integers(2, 6))):
            z = rng.uniform(z_min + 2, 70)
            items.append(SceneItem(z, objects.pole, (side * (road + 0.4), z)))
        for _ in range(int(rng.integers(1, 5))):
            z = rng.uniform(z_min + 3, 60)
            # Trees stand in the middle of the grass strip, or at the back of the sidewalk.
            tree_x = side * (road + walk + (grass * 0.5 if grass else -0.6))
            items.append(SceneItem(z, objects.tree, (tree_x, z)))
        for _ in range(int(rng.integers(0, 5))):
            z = rng.uniform(z_min + 1, 40)
            person_x = side * (road + rng.uniform(0.6, walk - 0.3))
            items.append(SceneItem(z, objects.human, (person_x, z, 0.0, "person", False)))
        if rng.random() < 0.4:
            z = rng.uniform(z_min + 1, 50)
            items.append(SceneItem(z, objects.static_object, (side * (road + walk - 0.4), z)))
        if rng.random() < 0.35:
            z0 = rng.uniform(z_min, 30)
            items.append(SceneItem(z0, objects.fence, (side, road + walk, z0)))
        for _ in range(int(rng.integers(0, 3))):  # parked cars along the curb
            z = rng.uniform(z_min + 1, 60)
            items.append(SceneItem(z, objects.vehicle, (side * (road - 1.2), z, "car")))
    for _ in range(int(rng.integers(1, 5))):  # traffic in the lanes
        lane_x = rng.uniform(-layout.road_left + 1.5, layout.road_right - 1.5)
        z = rng.uniform(z_min + 2, 80)
        kind = "car" if rng.random() < 0.8 else ("bus" if rng.random() < 0.5 else "truck")
        items.append(SceneItem(z, objects.vehicle, (lane_x, z, kind)))
    for _ in range(int(rng.integers(0, 3))):
        z = rng.uniform(z_min + 2, 35)
        bicycle_x = rng.uniform(-layout.road_left + 0.8, layout.road_right - 0.8)
        items.append(SceneItem(z, objects.cyclist, (bicycle_x, z)))
    # Far to near; the sort is stable, so items at one depth keep the order they were placed in.
    for item in sorted(items, key=lambda item: -item.depth):
        item.paint(canvas, rng)

    if rng.random() < 0.7:
        objects.ego_hood(canvas, rng)
    if rng.random() < 0.5:  # a thin out-of-roi frame, as at the rectified image border
        b = max(1, width // 256)
        for sl in (np.s_[:b, :], np.s_[-b:, :], np.s_[:, :b], np.s_[:, -b:]):
            canvas.label[sl] = LABEL_ID["out of roi"]
            canvas.rgb[sl] = 0

    return shade(canvas, rng), canvas.label


def shade(canvas: Canvas, rng: np.random.Generator) -> np.ndarray:
    """Textures by class, lighting and sensor noise -> uint8 BGR image."""
    h, w = canvas.h, canvas.w
    label = canvas.label
    fine = rng.standard_normal((h, w)).astype(np.float32)
    mid = smooth_noise(rng, h, w, max(2, w // 160))
    low = smooth_noise(rng, h, w, max(8, w // 12))
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
