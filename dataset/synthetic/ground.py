"""The street on the ground plane: road with lane marks, tiled sidewalks, grass and shadow.

Every pixel below the horizon is classified from its ground-plane position (lateral offset and
depth, inverted from the camera), so road, sidewalk and terrain meet along lines that converge on
the vanishing point and tiles and dashes shrink with distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataset.labels import LABEL_ID
from dataset.synthetic.camera import CAMERA_HEIGHT, Canvas, jitter


@dataclass
class StreetLayout:
    """Widths (metres) across the street, left of the camera then right, and its markings."""

    road_left: float  # road edge left of the camera axis
    road_right: float
    sidewalk_left: float
    sidewalk_right: float
    grass_left: float  # 0: facades stand right behind the sidewalk
    grass_right: float
    lanes: list[float]  # lateral positions of the dashed lane lines
    dash_phase: float  # metres; shifts the dashes along the road
    crosswalk: float | None  # depth of the zebra crossing's near edge, or none
    shadow: int  # -1: shadow on the left, 1: on the right, 0: overcast
    shadow_edge: float  # lateral distance from the axis where the shadow starts

    @property
    def house_left(self) -> float:
        """Lateral distance from the camera axis to the left facades."""
        return self.road_left + self.sidewalk_left + self.grass_left

    @property
    def house_right(self) -> float:
        return self.road_right + self.sidewalk_right + self.grass_right


def random_layout(rng: np.random.Generator) -> StreetLayout:
    """One or two lanes each way, sidewalks, optional grass strips, crosswalk and shadow."""
    # The order of the draws is part of the output: reordering them changes every seed's scene.
    lanes_each = int(rng.integers(1, 3))
    lane_w = rng.uniform(3.0, 3.6)
    road_left = lanes_each * lane_w + rng.uniform(-0.5, 1.0)
    road_right = lanes_each * lane_w + rng.uniform(-0.5, 1.0)
    sidewalk_left = rng.uniform(2.0, 4.5)
    sidewalk_right = rng.uniform(2.0, 4.5)
    grass_left = rng.uniform(2.5, 7.0) if rng.random() < 0.6 else 0.0
    grass_right = rng.uniform(2.5, 7.0) if rng.random() < 0.6 else 0.0
    lanes = [k * lane_w for k in range(-lanes_each + 1, lanes_each)]
    dash_phase = rng.uniform(0, 9)
    crosswalk = rng.uniform(8, 25) if rng.random() < 0.25 else None
    shadow = int(rng.choice([-1, 0, 1]))
    layout = StreetLayout(
        road_left=road_left,
        road_right=road_right,
        sidewalk_left=sidewalk_left,
        sidewalk_right=sidewalk_right,
        grass_left=grass_left,
        grass_right=grass_right,
        lanes=lanes,
        dash_phase=dash_phase,
        crosswalk=crosswalk,
        shadow=shadow,
        shadow_edge=0.0,  # set below: it depends on the house line on the shaded side
    )
    # The shadow starts part-way across the street, towards the facades on the shaded side.
    house = layout.house_left if shadow < 0 else layout.house_right
    layout.shadow_edge = rng.uniform(0.3, 0.9) * house
    return layout


def draw_ground(canvas: Canvas, rng: np.random.Generator, layout: StreetLayout) -> None:
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

    road_l, road_r = layout.road_left, layout.road_right
    side_l, side_r = layout.sidewalk_left, layout.sidewalk_right
    grass_l, grass_r = layout.grass_left, layout.grass_right
    is_road = below & (lateral >= -road_l) & (lateral <= road_r)
    is_side = below & ~is_road & (lateral >= -road_l - side_l) & (lateral <= road_r + side_r)
    is_grass = below & ~is_road & ~is_side
    is_grass &= (lateral >= -road_l - side_l - grass_l) & (lateral <= road_r + side_r + grass_r)
    beyond = below & ~is_road & ~is_side & ~is_grass  # under the facades; covered later

    road_color = jitter(rng, (88, 86, 92), 10)
    side_color = jitter(rng, (168, 150, 152), 14)
    grass_color = jitter(rng, (128, 160, 70), 14)
    label[is_road] = LABEL_ID["road"]
    rgb[is_road] = road_color
    label[is_side | beyond] = LABEL_ID["sidewalk"]
    rgb[is_side | beyond] = side_color
    label[is_grass] = LABEL_ID["terrain"]
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
    rgb[is_side & curb] = jitter(rng, (200, 196, 190), 8)

    # Lane marks: dashed centre line(s) and solid edge lines, fading with distance.
    paint = np.zeros_like(below)
    near = depth < 70
    mark_half_width = 0.12
    for lane_x in layout.lanes:
        dash = (np.mod(depth + layout.dash_phase, 9.0) < 3.0) & (
            np.abs(lateral - lane_x) < mark_half_width
        )
        paint |= dash & near
    paint |= near & (
        (np.abs(lateral + road_l - 0.35) < mark_half_width)
        | (np.abs(lateral - road_r + 0.35) < mark_half_width)
    )
    if layout.crosswalk is not None:
        z0 = layout.crosswalk
        stripes = (depth > z0) & (depth < z0 + 3.0) & (np.mod(lateral, 1.0) < 0.5)
        paint |= stripes
    paint &= is_road
    rgb[paint] = jitter(rng, (225, 225, 220), 6)

    # Building shadow on the sun's far side of the street.
    if layout.shadow != 0:
        s = layout.shadow
        shade = below & (lateral * s > 0) & (np.abs(lateral) > layout.shadow_edge)
        rgb[shade & ~is_grass] *= 0.62
        rgb[shade & is_grass] *= 0.7
