"""Check a dataset before training on it: read every listed image and label once, list every problem.

    python -m dataset.check --dataset cityscapes --data-dir dataset/cityscapes [--list FILE ...]

Without ``--list`` it checks the dataset's own sources of ``--split`` (default: train and val):
its shipped list files, or the folders its layout scans. Worker processes read the files
(``--workers``, progress bar on stderr); then one table of every problem goes to stdout, each with
the file and the list line (or scanned image) that names it, and a one-line summary. The exit
status is 0 when nothing is wrong, 1 otherwise (2 for a command that cannot run).

Problems found: missing, empty or unreadable lists; every list line that is not a sample, with
its list and line number (a blank line, which the loaders skip and which alone does not fail the
check; an image without its label, or too many fields, at which they stop); missing or unreadable
images and labels; images and labels cut short (a JPEG without its end marker, a PNG without its
``IEND`` chunk: decoders fill the missing part with grey and say nothing); a label of another size
than its image; label values the dataset's table does not know, with their pixel counts; a list
mixing label kinds. The table's ``loaders`` column says what training, evaluation and submission
do with each: ``fail`` (stop with one error line naming it), ``skip`` (pass over it) or ``read``
(read it without a word). ``train.py --check-data`` runs the same check on its training data.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from dataset.base import (
    DatasetError,
    Sample,
    fields_problem,
    list_file_lines,
    read_image,
    read_label,
)
from dataset.catalog import DATASET_NAMES, canonical_name, dataset_info
from dataset.layouts import scan_split
from dataset.loader import label_tables, sample_name
from utils.cli import ArgumentParser, existing_folder, non_negative_int

PROG = "python -m dataset.check"
# How far from the end of a file its end marker may lie (some writers append padding).
TAIL_BYTES = 1024
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
PNG_START, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND"


# What the loaders (training, evaluation, submission) do with a problem, a column of the table:
# stop with one error line naming it, pass over it without a word, or read it without a word
# (a file cut short decodes with its missing part filled in grey).
FAIL, SKIP, READ = "fail", "skip", "read"
SILENT_KINDS = {"blank line": SKIP, "truncated image": READ, "truncated label": READ}


@dataclass(frozen=True)
class Problem:
    """One thing wrong: what, the file it is about, where it is listed, and details."""

    kind: str
    file: str
    where: str
    detail: str = ""

    @property
    def loaders(self) -> str:
        """``FAIL``, ``SKIP`` or ``READ``: what the loaders do with it."""
        return SILENT_KINDS.get(self.kind, FAIL)


@dataclass
class Source:
    """The samples of one list file (or scanned split) and the problems of the list itself."""

    name: str
    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


@dataclass
class Report:
    """Every problem found, in the order of the lists and their lines."""

    sources: list[Source]
    problems: list[Problem]

    @property
    def samples(self) -> int:
        return sum(len(source.samples) for source in self.sources)

    @property
    def ok(self) -> bool:
        """Nothing the loaders would stop at, or read wrong without a word (blank lines are
        fine: they skip them)."""
        return all(p.loaders == SKIP for p in self.problems)


# ------------------------------------------------------------------------------------------------
# Sources: list files read line by line so that every bad line is reported, not only the first


def list_source(root: str, list_path: str, fields: Sequence[int], info) -> Source:
    """The samples of a list file of ``image [label]`` lines (paths relative to ``root``), and
    every line that is not one: blank lines (which the loaders skip), lines of too few or too many
    fields (at which they stop).

    Lines are read as the loader reads them (``dataset.base.list_file_lines``: a byte-order mark,
    CRLF line ends and trailing spaces are fine). With ``fields`` (1, 2) a list whose lines mostly
    carry labels reports the lines without one.
    """
    source = Source(list_path)
    if not os.path.isfile(list_path):
        source.problems.append(Problem("missing list", list_path, list_path))
        return source
    try:
        lines = list_file_lines(list_path)
    except (OSError, DatasetError) as error:
        detail = str(error).removeprefix(f"list file {list_path} ")
        source.problems.append(Problem("unreadable list", list_path, list_path, detail))
        return source
    entries, blank = [], []
    for number, parts in lines:
        where = f"{list_path} line {number}"
        if not parts:
            blank.append(Problem("blank line", list_path, where, "no fields"))
        elif len(parts) not in fields:
            kind = "too many fields" if len(parts) > max(fields) else "image without a label"
            detail = f"{fields_problem(parts, tuple(fields))}: {' '.join(parts)!r}"
            source.problems.append(Problem(kind, list_path, where, detail))
        else:
            entries.append((where, [os.path.join(root, p) for p in parts]))
    with_label = sum(len(paths) == 2 for _, paths in entries)
    for where, paths in entries:
        if len(paths) == 1 and with_label > len(entries) // 2:
            detail = f"1 field where the list's other lines have 2 (image label): {paths[0]!r}"
            source.problems.append(Problem("image without a label", list_path, where, detail))
            continue
        label = paths[1] if len(paths) == 2 else None
        source.samples.append(Sample(paths[0], label, sample_name(info, paths[0]), where))
    if not entries and not source.problems:
        detail = f"{len(blank)} blank line(s), no samples" if blank else "no lines"
        source.problems.append(Problem("empty list", list_path, list_path, detail))
    else:
        source.problems += blank
    return source


def scanned_source(info, root: str, split: str) -> Source:
    """The samples the dataset's layout finds for ``split`` (folders, id lists)."""
    source = Source(f"{split} (scanned under {root})")
    try:
        source.samples = scan_split(info.layout, root, split)
    except DatasetError as error:
        source.problems.append(Problem("no samples", root, split, str(error)))
    return source


def build_sources(
    info, root: str, lists: Iterable[tuple[str, str | None]], fields: Sequence[int] | None = None
) -> list[Source]:
    """``lists`` of ``(split, list file or None to scan)`` as sources. ``fields`` None: two
    fields (image label), test splits may have one."""
    sources = []
    for split, path in lists:
        if path is None:
            sources.append(scanned_source(info, root, split))
        else:
            allowed = fields or ((1, 2) if split == "test" else (2,))
            sources.append(list_source(root, path, allowed, info))
    return sources


# ------------------------------------------------------------------------------------------------
# One sample, in a worker process


def cut_short(path: str) -> str:
    """Why a JPEG or PNG file looks cut short, or "" (other formats are not looked at)."""
    with open(path, "rb") as handle:
        start = handle.read(8)
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - TAIL_BYTES))
        tail = handle.read()
    if start.startswith(JPEG_START) and JPEG_END not in tail:
        return "JPEG without its end marker (the file is cut short)"
    if start.startswith(PNG_START) and PNG_END not in tail:
        return "PNG without its IEND chunk (the file is cut short)"
    return ""


def _pixels(count: int) -> str:
    return f"{count:,} px"


@contextlib.contextmanager
def decoder_quiet() -> Iterator[None]:
    """Silence what image decoders print straight to the process's stderr (libjpeg's "Premature
    end of JPEG file"): the table reports it, once and with the file's name."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_sample(task: tuple[str, str | None, str, bytes]) -> list[Problem]:
    """Every problem of one sample: ``(image, label or None, where, known label values)``."""
    image_path, label_path, where, known_bytes = task
    problems: list[Problem] = []
    image = None
    if not os.path.isfile(image_path):
        problems.append(Problem("missing image", image_path, where))
    else:
        try:
            with decoder_quiet():
                image = read_image(image_path, where)
        except DatasetError:
            problems.append(Problem("unreadable image", image_path, where, "cannot be decoded"))
        else:
            reason = cut_short(image_path)
            if reason:
                problems.append(Problem("truncated image", image_path, where, reason))
    if label_path is None:
        return problems
    if not os.path.isfile(label_path):
        problems.append(Problem("missing label", label_path, where))
        return problems
    try:
        label = read_label(label_path, where)
    except DatasetError as error:
        detail = str(error).split(f"label {label_path} ", 1)[-1]
        problems.append(Problem("unreadable label", label_path, where, detail))
        return problems
    reason = cut_short(label_path)
    if reason:
        problems.append(Problem("truncated label", label_path, where, reason))
    if image is not None and label.shape != image.shape[:2]:
        problems.append(
            Problem(
                "size mismatch",
                label_path,
                where,
                f"label {label.shape[0]}x{label.shape[1]}, image {image.shape[0]}x{image.shape[1]}",
            )
        )
    known = np.frombuffer(known_bytes, dtype=bool)
    counts = np.bincount(label.ravel(), minlength=256)
    unknown = np.flatnonzero((counts > 0) & ~known)
    if unknown.size:
        detail = ", ".join(f"{v} ({_pixels(int(counts[v]))})" for v in unknown)
        problems.append(Problem("unknown label values", label_path, where, detail))
    return problems


# ------------------------------------------------------------------------------------------------
# All of it


def _tasks(info, sources: list[Source]) -> list[tuple[str, str | None, str, bytes]]:
    tasks = []
    for source in sources:
        labels = [s.label for s in source.samples if s.label is not None]
        kinds = {label_tables(info, "auto", label)[0].tobytes() for label in labels}
        if len(kinds) > 1:
            source.problems.append(
                Problem(
                    "mixed label kinds",
                    source.name,
                    source.name,
                    "label ids and *_labelTrainIds.png in one list; use one kind per list",
                )
            )
        for sample in source.samples:
            known = label_tables(info, "auto", sample.label)[1]
            tasks.append((sample.image, sample.label, sample.where, known.tobytes()))
    return tasks


def check_sources(info, sources: list[Source], workers: int = 0, progress: bool = True) -> Report:
    """Read every sample of ``sources`` once (``workers`` processes; 0: this one), with a
    progress bar on a terminal."""
    tasks = _tasks(info, sources)
    problems = [p for source in sources for p in source.problems]
    # The bar only on a terminal (tqdm's disable=None): in a log file it is noise.
    bar = tqdm(
        total=len(tasks),
        desc="check",
        unit="sample",
        disable=None if progress else True,
        file=sys.stderr,
    )
    with bar:
        if workers > 0 and len(tasks) > 1:
            context = multiprocessing.get_context("spawn" if os.name == "nt" else "fork")
            with context.Pool(min(workers, len(tasks))) as pool:
                for found in pool.imap(check_sample, tasks, chunksize=4):
                    problems += found
                    bar.update()
        else:
            for task in tasks:
                problems += check_sample(task)
                bar.update()
    # In the order of the lists and their lines.
    order = {source.name: index for index, source in enumerate(sources)}
    problems.sort(key=lambda p: (order.get(_list_of(p.where), len(order)), _line_of(p.where)))
    return Report(sources, problems)


LINE = re.compile(r"^(.*) line (\d+)$")


def _list_of(where: str) -> str:
    found = LINE.match(where)
    return found.group(1) if found else where


def _line_of(where: str) -> int:
    found = LINE.match(where)
    return int(found.group(2)) if found else 0


def format_table(problems: Sequence[Problem]) -> str:
    """One aligned row per problem: kind, what the loaders do (fail / skip / read), where it is
    listed, the file, details."""
    header = ("problem", "loaders", "listed at", "file", "detail")
    rows = [header, *((p.kind, p.loaders, p.where, p.file, p.detail) for p in problems)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(4)]
        lines.append("  ".join([*cells, row[4]]).rstrip())
    return "\n".join(lines)


def summary(report: Report) -> str:
    """One line: what was read, and how many problems of which kind (lines the loaders skip
    counted apart)."""
    read = f"{report.samples} sample(s) in {len(report.sources)} source(s)"
    skipped = [p for p in report.problems if p.loaders == SKIP]
    problems = [p for p in report.problems if p.loaders != SKIP]
    kinds = Counter(p.kind for p in problems)
    detail = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
    found = f"{len(problems)} problem(s) ({detail})" if problems else "no problems"
    if skipped:
        found += f"; {len(skipped)} blank line(s), which the loaders skip"
    return f"{read}: {found}"


def default_lists(info, splits: Sequence[str]) -> list[tuple[str, str | None]]:
    """The dataset's own sources of ``splits``: its shipped list files, else a folder scan."""
    template = info.layout.default_list
    return [(split, template.format(split=split) if template else None) for split in splits]


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG, description=__doc__.splitlines()[0], epilog="exit status: 0 no problems, "
        "1 problems found (table on stdout), 2 the command cannot run"
    )  # fmt: skip
    parser.add_argument("--dataset", required=True, type=canonical_name, choices=DATASET_NAMES)
    parser.add_argument(
        "--data-dir", required=True, type=existing_folder, help="dataset root folder"
    )
    parser.add_argument(
        "--list",
        nargs="+",
        default=None,
        metavar="FILE",
        help="list files of 'image [label]' lines (default: the dataset's own lists of --split, "
        "or its folders)",
    )
    parser.add_argument(
        "--split",
        nargs="+",
        default=("train", "val"),
        help="splits to check without --list (default: train val)",
    )
    parser.add_argument(
        "--workers",
        type=non_negative_int,
        default=min(8, os.cpu_count() or 1),
        help="reading processes (0: read in this process)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    try:
        info = dataset_info(args.dataset, args.data_dir)
    except DatasetError as error:
        parser.error(str(error))
    splits = [s for s in args.split if s in info.layout.splits]
    unknown = sorted(set(args.split) - set(splits))
    if unknown and args.list is None:
        parser.error(f"--split: {args.dataset} has no split {', '.join(unknown)}")
    if args.list is not None:
        sources = build_sources(info, args.data_dir, [("", p) for p in args.list], (1, 2))
    else:
        sources = build_sources(info, args.data_dir, default_lists(info, splits))
    report = check_sources(info, sources, args.workers)
    if report.problems:
        print(format_table(report.problems))
    print(summary(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
