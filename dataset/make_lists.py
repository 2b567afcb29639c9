"""Write list files for any folder tree in the Cityscapes layout.

    python -m dataset.make_lists --data-dir DIR [--out DIR]

For every split under ``DIR/leftImg8bit`` writes ``<split>.lst`` with one
``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png gtFine/<split>/<city>/<name>_gtFine_labelIds.png``
line per image (the original's format, paths relative to DIR), sorted. The test split is written
image-only, as Cityscapes' test labels are placeholders. ``trainval.lst`` joins train and val.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from utils.fileio import atomic_write

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
IMAGE_ONLY_SPLITS = ("test",)


def list_lines(data_dir: str | os.PathLike, split: str) -> list[str]:
    """Sorted list lines of one split; raises FileNotFoundError naming an image with no label."""
    data_dir = Path(data_dir)
    image_root = data_dir / "leftImg8bit" / split
    lines = []
    for image in sorted(image_root.glob(f"*/*{IMAGE_SUFFIX}")):
        city = image.parent.name
        name = image.name[: -len(IMAGE_SUFFIX)]
        image_rel = f"leftImg8bit/{split}/{city}/{image.name}"
        if split in IMAGE_ONLY_SPLITS:
            lines.append(image_rel)
            continue
        label_rel = f"gtFine/{split}/{city}/{name}{LABEL_SUFFIX}"
        if not (data_dir / label_rel).is_file():
            raise FileNotFoundError(f"label {data_dir / label_rel} for image {image} not found")
        lines.append(f"{image_rel} {label_rel}")
    return lines


def write_list(path: Path, lines: list[str]) -> None:
    """Write lines atomically, so an interrupted run never leaves a truncated list."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, "".join(line + "\n" for line in lines).encode("utf-8"))


def make_lists(data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> dict:
    """Write ``<split>.lst`` for each split found (and ``trainval.lst``); returns split -> count."""
    data_dir = Path(data_dir)
    out_dir = Path(out_dir) if out_dir is not None else data_dir
    image_root = data_dir / "leftImg8bit"
    if not image_root.is_dir():
        raise FileNotFoundError(f"{image_root} not found: expected the Cityscapes layout")
    counts = {}
    per_split = {}
    for split_dir in sorted(p for p in image_root.iterdir() if p.is_dir()):
        lines = list_lines(data_dir, split_dir.name)
        if lines:
            per_split[split_dir.name] = lines
    if "train" in per_split and "val" in per_split:
        per_split["trainval"] = per_split["train"] + per_split["val"]
    for split, lines in per_split.items():
        write_list(out_dir / f"{split}.lst", lines)
        counts[split] = len(lines)
    if not counts:
        raise FileNotFoundError(f"no *{IMAGE_SUFFIX} images under {image_root}/<split>/<city>/")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="root holding leftImg8bit/ and gtFine/")
    parser.add_argument("--out", default=None, help="folder for the .lst files (default: data dir)")
    args = parser.parse_args(argv)
    try:
        counts = make_lists(args.data_dir, args.out)
    except FileNotFoundError as error:
        raise SystemExit(f"error: {error}") from None
    for split, count in counts.items():
        print(f"{split}.lst: {count} samples")


if __name__ == "__main__":
    main()
