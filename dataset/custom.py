"""Your own dataset: the class table ``classes.csv`` of a ``--dataset custom --data-dir DIR`` tree.

``DIR/classes.csv`` has the header ``name,value,r,g,b`` and one row per class: its name, the
pixel value that marks it in the label PNGs (0..255) and its colour (0..255 each). Row order gives
the train ids 0, 1, ...; label pixels whose value no row lists are ignored in training and
evaluation. For example::

    name,value,r,g,b
    background,0,0,0,0
    road,1,128,64,128
    car,7,0,0,142
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

from dataset.base import DatasetError

CLASSES_FILE = "classes.csv"
COLUMNS = ("name", "value", "r", "g", "b")
# Train id 255 is the ignore value, so at most 255 classes.
MAX_CLASSES = 255


@dataclass(frozen=True)
class ClassRow:
    name: str
    value: int
    color: tuple[int, int, int]


def _integer(text: str, where: str, column: str, name: str) -> int:
    try:
        number = int(text.strip())
    except ValueError:
        raise DatasetError(
            f"{where} ({name!r}): {column} must be an integer in 0..255, got {text.strip()!r}"
        ) from None
    if not 0 <= number <= 255:
        what = "value" if column == "value" else f"colour {column}"
        raise DatasetError(f"{where} ({name!r}): {what}={number} is outside 0..255")
    return number


def read_classes(path: str | os.PathLike) -> list[ClassRow]:
    """Parse and check ``classes.csv``; every problem is a DatasetError naming file and line."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatasetError(
            f"{path} not found: a custom dataset needs {CLASSES_FILE} "
            f"(header {','.join(COLUMNS)}; one row per class)"
        )
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"{path} is unreadable: {error}") from None
    numbered = [(n, row) for n, row in enumerate(rows, start=1) if any(c.strip() for c in row)]
    if not numbered:
        raise DatasetError(f"{path} is empty; expected the header {','.join(COLUMNS)}")
    header_line, header = numbered[0]
    header = [c.strip().lower() for c in header]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DatasetError(
            f"{path} line {header_line}: missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}; the header must name {','.join(COLUMNS)}"
        )
    index = {c: header.index(c) for c in COLUMNS}
    classes: list[ClassRow] = []
    seen_values: dict[int, int] = {}
    seen_names: dict[str, int] = {}
    for number, row in numbered[1:]:
        where = f"{path} line {number}"
        cells = {}
        for column, position in index.items():
            if position >= len(row) or not row[position].strip():
                raise DatasetError(f"{where}: no {column} in row {','.join(row)!r}")
            cells[column] = row[position].strip()
        name = cells["name"]
        value = _integer(cells["value"], where, "value", name)
        color = tuple(_integer(cells[c], where, c, name) for c in "rgb")
        if value in seen_values:
            raise DatasetError(
                f"{where} ({name!r}): value {value} is already used on line {seen_values[value]}"
            )
        if name in seen_names:
            raise DatasetError(
                f"{where}: class name {name!r} is already used on line {seen_names[name]}"
            )
        seen_values[value] = number
        seen_names[name] = number
        classes.append(ClassRow(name, value, color))
    if len(classes) < 2:
        raise DatasetError(f"{path} lists {len(classes)} class(es); segmentation needs at least 2")
    if len(classes) > MAX_CLASSES:
        raise DatasetError(f"{path} lists {len(classes)} classes; at most {MAX_CLASSES} fit")
    return classes


def classes_csv(classes: list[ClassRow]) -> bytes:
    """The bytes of a ``classes.csv`` listing ``classes`` (the synthetic generator writes one)."""
    lines = [",".join(COLUMNS)]
    lines += [f"{c.name},{c.value},{c.color[0]},{c.color[1]},{c.color[2]}" for c in classes]
    return ("\n".join(lines) + "\n").encode("utf-8")
