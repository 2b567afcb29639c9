"""Write list files for a dataset tree in any of the known layouts (``dataset.layouts``).

    python -m dataset.make_lists --data-dir DIR [--dataset cityscapes|custom|...] [--out DIR]

Cityscapes: for every split under ``DIR/leftImg8bit`` writes ``<split>.lst`` with one
``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png gtFine/<split>/<city>/<name>_gtFine_labelIds.png``
line per image (the original's format, paths relative to DIR), sorted; the coarse split
``train_extra`` pairs its images with ``gtCoarse/train_extra/.../<name>_gtCoarse_labelIds.png``.
The test split is written image-only, as Cityscapes' test labels are placeholders.
``trainval.lst`` joins train and val (never the coarse images). Other datasets: one list per
split found in their layout (custom: ``images/<split>/...`` with ``labels/<split>/...``).
Every list is checked before any is written; each is written atomically.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dataset.base import DatasetError
from dataset.catalog import DATASET_NAMES, canonical_name
from dataset.layouts import Layout, dataset_layout, scan_split
from utils.cli import (
    RUN_STATUS,
    ArgumentParser,
    existing_folder,
    fail,
    folder_problem,
    output_folder,
)
from utils.fileio import atomic_write

PROG = "python -m dataset.make_lists"


def _relative(path: str, root: Path) -> str:
    return Path(path).relative_to(root).as_posix()


def list_lines(data_dir: str | os.PathLike, split: str, dataset: str = "cityscapes") -> list[str]:
    """Sorted list lines of one split; raises FileNotFoundError naming an image with no label."""
    data_dir = Path(data_dir)
    layout = dataset_layout(canonical_name(dataset))
    try:
        samples = scan_split(layout, data_dir, split, allow_empty=True)
    except DatasetError as error:
        raise FileNotFoundError(str(error)) from None
    lines = []
    for sample in samples:
        image_rel = _relative(sample.image, data_dir)
        if sample.label is None:
            lines.append(image_rel)
            continue
        if not os.path.isfile(sample.label):
            raise FileNotFoundError(f"label {sample.label} for image {sample.image} not found")
        lines.append(f"{image_rel} {_relative(sample.label, data_dir)}")
    return lines


def write_list(path: Path, lines: list[str]) -> None:
    """Write lines atomically, so an interrupted run never leaves a truncated list."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, "".join(line + "\n" for line in lines).encode("utf-8"))


def present_splits(layout: Layout, data_dir: Path) -> list[str]:
    """The layout's splits that exist under ``data_dir``, sorted; for a layout whose split
    folders are named freely (Cityscapes, custom), every folder under the image root."""
    if "{split}" in layout.image_dir and layout.nested:
        image_root = data_dir / layout.image_dir.split("{split}")[0]
        if not image_root.is_dir():
            raise FileNotFoundError(f"{image_root} not found: expected the {layout.title} layout")
        return sorted(p.name for p in image_root.iterdir() if p.is_dir())
    found = []
    for split in layout.splits:
        image_dir = data_dir / layout.image_dir.format(split=layout.word(split))
        id_lists = [data_dir / t.format(split=layout.word(split)) for t in layout.id_lists]
        if any(p.is_file() for p in id_lists) or (
            not layout.id_list_required and image_dir.is_dir()
        ):
            found.append(split)
    if not found:
        raise FileNotFoundError(f"no {layout.title} split found under {data_dir}")
    return sorted(found)


def make_lists(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    dataset: str = "cityscapes",
) -> dict:
    """Write ``<split>.lst`` for each split found (and ``trainval.lst``); returns split -> count."""
    data_dir = Path(data_dir)
    out_dir = Path(out_dir) if out_dir is not None else data_dir
    layout = dataset_layout(canonical_name(dataset))
    per_split = {}
    for split in present_splits(layout, data_dir):
        lines = list_lines(data_dir, split, dataset)
        if lines:
            per_split[split] = lines
    if "train" in per_split and "val" in per_split:
        per_split["trainval"] = per_split["train"] + per_split["val"]
    if not per_split:
        tails = "/".join(layout.image_tails)
        raise FileNotFoundError(
            f"no *{tails} images under {data_dir / layout.image_dir.format(split='<split>')}"
        )
    counts = {}
    for split, lines in per_split.items():
        write_list(out_dir / f"{split}.lst", lines)
        counts[split] = len(lines)
    return counts


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-dir", required=True, type=existing_folder, help="the dataset's root folder"
    )
    parser.add_argument(
        "--dataset",
        default="cityscapes",
        choices=DATASET_NAMES,
        help="layout of the tree (custom: images/<split>/, labels/<split>/, classes.csv)",
    )
    parser.add_argument(
        "--out",
        default=None,
        type=output_folder,
        help="folder for the .lst files (default: the data dir)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Exit status 2 when the tree holds no lists to write (nothing is written), 1 when writing
    fails (each list is written whole or not at all)."""
    args = get_args_parser().parse_args(argv)
    if args.out is None:
        # The lists go into the data folder, which its type checked for reading only.
        problem = folder_problem(args.data_dir)
        if problem:
            fail(PROG, f"--data-dir {problem}; give --out FOLDER for the lists")
    out = args.out if args.out is not None else args.data_dir
    try:
        counts = make_lists(args.data_dir, out, args.dataset)
    except FileNotFoundError as error:
        fail(PROG, str(error))
    except OSError as error:
        fail(PROG, f"cannot write the lists into {out}: {error.strerror or error}", RUN_STATUS)
    for split, count in counts.items():
        print(f"{split}.lst: {count} samples")


if __name__ == "__main__":
    main()
