"""Write synthetic scenes to disk in the Cityscapes layout, with list files; the command line.

    python -m dataset.synthetic --out DIR --train 48 --val 8 --test 8 --height 256 --width 512
    python -m dataset.synthetic --out DIR --train-extra 8      # plus coarse train_extra scenes
    python -m dataset.synthetic --out DIR --layout custom      # or lip, pascal_context, ...

Scene ``index`` of a split is ``<city>_<round:06d>_000019`` in ``leftImg8bit/<split>/<city>/``
(``_leftImg8bit.png``) and ``gtFine/<split>/<city>/`` (``_gtFine_labelIds.png`` and
``_gtFine_color.png``), with the split's cities taking turns as in the real dataset. The coarse
split ``train_extra`` has ``gtCoarse/train_extra/<city>/`` labels with unlabelled object borders.
Other layouts: ``dataset.synthetic.formats``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

from dataset.make_lists import make_lists
from dataset.palette import labelid_palette
from dataset.synthetic.formats import LAYOUT_NAMES, SPLITS, coarse_label, generate_layout
from dataset.synthetic.scene import render_scene, scene_rng
from utils.cli import (
    RUN_STATUS,
    ArgumentParser,
    fail,
    int_at_least,
    non_negative_int,
    output_file,
    output_folder,
)
from utils.fileio import atomic_write

PROG = "python -m dataset.synthetic"

SPLIT_CITIES = {
    "train": ("aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt"),
    "val": ("frankfurt", "lindau", "munster"),
    "test": ("berlin", "bielefeld", "bonn", "leverkusen", "mainz", "munich"),
    "train_extra": ("augsburg", "bamberg", "dortmund", "dresden", "erlangen", "freiburg"),
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
    """Write scenes in the Cityscapes layout under ``out`` plus list files; returns list counts.

    ``counts`` may hold ``train_extra``: coarse scenes with ``gtCoarse`` labels.
    """
    out = Path(out)
    colors = labelid_palette()[:, ::-1]  # BGR for cv2
    for split, count in counts.items():
        coarse = split == "train_extra"
        kind = "gtCoarse" if coarse else "gtFine"
        for index in range(count):
            image, label = render_scene(scene_rng(seed, split, index), height, width)
            if coarse:
                label = coarse_label(label, width)
            city, stem = scene_name(split, index)
            image_dir = out / "leftImg8bit" / split / city
            label_dir = out / kind / split / city
            image_dir.mkdir(parents=True, exist_ok=True)
            label_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(image_dir / f"{stem}_leftImg8bit.png", encode_png(image))
            atomic_write(label_dir / f"{stem}_{kind}_labelIds.png", encode_png(label))
            atomic_write(label_dir / f"{stem}_{kind}_color.png", encode_png(colors[label]))
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
    parser = ArgumentParser(
        prog=PROG,
        description="Write procedural street scenes in the Cityscapes (or another) layout.",
    )
    parser.add_argument(
        "--out",
        default=None,
        type=output_folder,
        help="output root (leftImg8bit/, gtFine/, *.lst), created",
    )
    parser.add_argument(
        "--layout",
        default="cityscapes",
        choices=LAYOUT_NAMES,
        help="file layout and label values of the dataset to imitate (custom also writes "
        "classes.csv and list files)",
    )
    parser.add_argument("--train", type=non_negative_int, default=48, help="training scenes")
    parser.add_argument("--val", type=non_negative_int, default=8, help="validation scenes")
    parser.add_argument(
        "--test",
        type=non_negative_int,
        default=None,
        help="test scenes (default 8 where the layout has a test split)",
    )
    parser.add_argument(
        "--train-extra",
        type=non_negative_int,
        default=0,
        help="coarse train_extra scenes (Cityscapes layout)",
    )
    parser.add_argument("--height", type=int_at_least(32), default=256, help="pixels")
    parser.add_argument("--width", type=int_at_least(32), default=512, help="pixels")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument(
        "--preview",
        default=None,
        type=output_file,
        help="also write a PNG of samples beside labels",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.out is None and args.preview is None:
        parser.error("give --out and/or --preview")
    splits = (
        ("train", "val", "test", "train_extra")
        if args.layout == "cityscapes"
        else SPLITS[args.layout]
    )
    if args.test is None:
        args.test = 8 if "test" in splits else 0
    for flag in ("test", "train_extra"):
        if getattr(args, flag) and flag not in splits:
            parser.error(
                f"--{flag.replace('_', '-')}: the {args.layout} layout has no {flag} split"
            )
    try:
        write(args)
    except OSError as error:
        # Every file is written atomically: what exists is whole; the run stopped at this one.
        where = f" ({error.filename})" if error.filename else ""
        fail(PROG, f"writing failed{where}: {error.strerror or error}", RUN_STATUS)


def write(args: argparse.Namespace) -> None:
    """The scenes under ``--out`` and the ``--preview`` picture, as the flags ask."""
    if args.out is not None:
        counts = {"train": args.train, "val": args.val, "test": args.test}
        counts["train_extra"] = args.train_extra
        counts = {k: v for k, v in counts.items() if v}
        if args.layout == "cityscapes":
            lists = generate(args.out, counts, args.height, args.width, args.seed)
        else:
            lists = generate_layout(
                args.out, args.layout, counts, args.height, args.width, args.seed
            )
        if args.layout in ("cityscapes", "custom"):  # list files were written
            print(", ".join(f"{name}.lst: {n}" for name, n in lists.items()))
        else:
            print(", ".join(f"{name}: {n} scenes" for name, n in lists.items()))
    if args.preview is not None:
        preview(args.preview, seed=args.seed, height=args.height, width=args.width)
        print(f"wrote {args.preview}")
