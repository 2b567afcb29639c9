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

Modules: ``camera`` (pinhole camera and canvas), ``ground`` (road, sidewalk, lanes), ``objects``
(everything standing on the ground, and the sky), ``scene`` (one scene from a seed, shading),
``cli`` (files, list files and the command line), ``formats`` (the other datasets' layouts:
``--layout custom|lip|pascal_context|coco_stuff|ade20k``).
"""

from dataset.synthetic.camera import CAMERA_HEIGHT, Canvas
from dataset.synthetic.cli import SPLIT_CITIES, encode_png, generate, main, preview, scene_name
from dataset.synthetic.formats import CUSTOM_CLASSES, LAYOUT_NAMES, generate_layout, relabel
from dataset.synthetic.scene import SPLIT_INDEX, SceneItem, render_scene, scene_rng

__all__ = [
    "CAMERA_HEIGHT",
    "CUSTOM_CLASSES",
    "LAYOUT_NAMES",
    "SPLIT_CITIES",
    "SPLIT_INDEX",
    "Canvas",
    "SceneItem",
    "encode_png",
    "generate",
    "generate_layout",
    "main",
    "preview",
    "relabel",
    "render_scene",
    "scene_name",
    "scene_rng",
]
