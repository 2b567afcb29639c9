"""Write synthetic scenes to disk in the Cityscapes layout, with list files; the command line.

    python -m dataset.synthetic --out DIR --train 48 --val 8 --test 8 --height 256 --width 512

Scene ``index`` of a split is ``<city>_<round:06d>_000019`` in ``leftImg8bit/<split>/<city>/``
(``_leftImg8bit.png``) and ``gtFine/<split>/<city>/`` (``_gtFine_labelIds.png`` and
``_gtFine_color.png``), with the split's cities taking turns as in the real dataset.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

from dataset.make_lists import make_lists
from dataset.palette import labelid_palette
from dataset.synthetic.scene import render_scene, scene_rng
from utils.fileio import atomic_write

SPLIT_CITIES = {
    "train": ("aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt"),
    "val": ("frankfurt", "lindau", "munster"),
    "test": ("berlin", "bielefeld", "bonn", "leverkusen", "mainz", "munich"),
}


def scene_name(split: str, index: int) -> tuple[str, str]:
    """(city, file stem) of the index-th scene of a split: cities take turns."""
    cities = SPLIT_CITIES[split]
    city = cities[index % len(cities)]
    return city, f"{city}_{index // len(cities):06d}_000019"


def encode_png(array: np.ndarray, level: int = 3) -> bytes:
    """PNG bytes of a uint8 image (cv2 channel order) at zlib ``level``."""
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


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dataset.synthetic",
        description="Write procedural street scenes in the Cityscapes layout.",
    )
    parser.add_argument("--out", default=None, help="output root (leftImg8bit/, gtFine/, *.lst)")
    parser.add_argument("--train", type=int, default=48, help="training scenes")
    parser.add_argument("--val", type=int, default=8, help="validation scenes")
    parser.add_argument("--test", type=int, default=8, help="test scenes")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preview", default=None, help="also write a PNG of samples beside labels")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = get_args_parser()
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
