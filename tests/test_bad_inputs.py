"""Every command-line tool on every broken input we could think of: one table, one test.

Each row runs a tool as a subprocess and asserts a non-zero exit, exactly one error line on stderr
that names the cause, no traceback, and no half-written file. Rows of stage ``check`` fail before
any work (exit 2, and the error line is all of stderr); rows of stage ``run`` fail while working
(exit 1; the progress and log lines before the error are allowed). docs/errors.md
lists this table.

The tools are the entry points found in the repository (``tests.test_cli.tools``): a new one
fails ``test_every_tool_has_rows_for_each_case`` until it has rows here for an output path that
is a file, an unwritable output folder and a missing input, or a reason why a case cannot occur.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from network import get_segmentation_model
from tests.test_cli import tools
from tests.test_train import write_scenes

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # one subprocess per row
MODEL = ("--network", "resnet18", "--method", "base_oc_dsn")


@dataclass(frozen=True)
class Row:
    tool: str
    name: str
    args: tuple[str, ...]  # added to the tool's base arguments; {D} data, {C} files, {O} own dir
    cause: str  # the error line must contain this (same placeholders)
    stage: str = "check"  # "check": exit 2, stderr is the one line; "run": exit 1
    case: str = ""  # one of CASES, for the rows that cover one

    @property
    def id(self) -> str:
        return f"{self.tool.removesuffix('.py')}: {self.name}"


BASE = {
    "train.py": (
        *MODEL, "--data-dir", "{D}", "--data-list", "{D}/train.lst", "--input-size", "33,33",
        "--batch-size", "1", "--num-steps", "2", "--save-pred-every", "1", "--workers", "0",
        "--snapshot-dir", "{O}/snap", "--device", "cpu", "--threads", "1",
    ),
    "evaluate.py": (
        *MODEL, "--data-dir", "{D}", "--data-list", "{D}/val.lst", "--ckpt", "{C}/good.pth",
        "--output-path", "{O}/out", "--device", "cpu", "--workers", "0",
    ),
    "generate_submit.py": (
        *MODEL, "--data-dir", "{D}", "--data-list", "{D}/test.lst", "--ckpt", "{C}/good.pth",
        "--output-path", "{O}/out", "--device", "cpu", "--workers", "0",
    ),
    "predict.py": (*MODEL, "--ckpt", "{C}/good.pth", "--output-dir", "{O}/out", "--device",
                   "cpu", "{D}/leftImg8bit/val/city/city_000000_000019_leftImg8bit.png"),
    "export.py": (*MODEL, "--ckpt", "{C}/good.pth", "--format", "safetensors", "--output",
                  "{O}/out/model.safetensors"),
    "python -m dataset.check": ("--dataset", "cityscapes", "--data-dir", "{D}", "--workers", "0",
                                "--list", "{D}/val.lst"),
    "python -m dataset.make_lists": ("--data-dir", "{D}", "--out", "{O}/lists"),
    "python -m dataset.synthetic": ("--out", "{O}/scenes", "--train", "1", "--val", "0",
                                    "--test", "0", "--height", "32", "--width", "64"),
    "python -m bench": ("--quick", "--only", "context_cost", "--out", "{O}/results.md"),
    "python -m utils.curve": ("--metrics", "{C}/metrics.jsonl", "--out", "{O}/curve.png"),
}  # fmt: skip

# The three cases every tool is tested for, and why a tool cannot meet one.
OUTPUT_IS_A_FILE, UNWRITABLE, MISSING_INPUT = (
    "output is a file",
    "unwritable output",
    "missing input",
)
CASES = (OUTPUT_IS_A_FILE, UNWRITABLE, MISSING_INPUT)
CANNOT_OCCUR = {
    ("python -m dataset.check", OUTPUT_IS_A_FILE): "writes nothing: its report goes to stdout",
    ("python -m dataset.check", UNWRITABLE): "writes nothing: its report goes to stdout",
    ("python -m dataset.synthetic", MISSING_INPUT): "reads nothing: it makes its scenes",
    ("python -m bench", MISSING_INPUT): "reads nothing: each benchmark makes its inputs",
}

# Checkpoint rows, for each tool that reads one (train.py: --restore-from).
CHECKPOINTS = [
    ("missing checkpoint", "{C}/missing.pth", "{C}/missing.pth"),
    ("empty checkpoint", "{C}/empty.pth", "checkpoint {C}/empty.pth could not be read"),
    ("truncated checkpoint", "{C}/truncated.pth", "checkpoint {C}/truncated.pth could not be read"),
    ("not a checkpoint", "{C}/text.pth", "checkpoint {C}/text.pth could not be read"),
    ("checkpoint of other keys", "{C}/foreign.pth", "{C}/foreign.pth"),
    ("checkpoint of another class count", "{C}/classes5.pth", "{C}/classes5.pth"),
    ("checkpoint that unpickles code", "{C}/unsafe.pth", "was refused by torch.load(weights_only=True)"),
]  # fmt: skip

# List rows, for each tool that reads a list.
LISTS = [
    ("empty list", "{D}/empty.lst", "list file {D}/empty.lst is empty"),
    (
        "list naming missing files",
        "{D}/missing.lst",
        "{D}/missing.lst line 1: image {D}/leftImg8bit/val/city/nowhere_leftImg8bit.png not found",
    ),
    ("malformed list line", "{D}/malformed.lst", "{D}/malformed.lst line 2: expected"),
    ("list file missing", "{D}/nope.lst", "{D}/nope.lst"),
    ("list that is not text", "{D}/binary.lst", "{D}/binary.lst"),
]

# Samples that are only found when their pixels are read, for each tool that reads them.
SAMPLES = [
    ("unreadable image", "{D}/unreadable.lst",
     "{D}/unreadable.lst line 1: image {D}/leftImg8bit/val/city/garbage_leftImg8bit.png is unreadable"),
    ("label of another size", "{D}/small_label.lst", "{D}/small_label.lst line 1: label"),
    ("unknown label values", "{D}/unknown_values.lst",
     "{D}/unknown_values.lst line 1: label {D}/gtFine/val/city/unknown_gtFine_labelIds.png "
     "contains ids [200, 250]"),
]  # fmt: skip


def rows() -> list[Row]:
    table = []
    for name, path, cause in CHECKPOINTS:
        case = MISSING_INPUT if name == "missing checkpoint" else ""
        table.append(Row("train.py", name, ("--restore-from", path), cause, case=case))
        for tool in ("evaluate.py", "generate_submit.py", "predict.py", "export.py"):
            table.append(Row(tool, name, ("--ckpt", path), cause, case=case))
    for name, path, cause in LISTS:
        case = MISSING_INPUT if name == "list file missing" else ""
        table.append(Row("train.py", name, ("--data-list", path), cause, case=case))
        table.append(Row("evaluate.py", name, ("--data-list", path), cause, case=case))
        table.append(Row("generate_submit.py", name, ("--data-list", path), cause, case=case))
    for name, path, cause in SAMPLES:
        # Training finds them mid-run (train.py --check-data finds them before).
        table.append(Row("train.py", name, ("--data-list", path), cause, "run"))
        table.append(Row("evaluate.py", name, ("--data-list", path), cause, "run"))
    table.append(Row("generate_submit.py", "unreadable image",
                     ("--data-list", "{D}/unreadable.lst"), SAMPLES[0][2], "run"))  # fmt: skip
    table.append(
        Row("train.py", "--check-data finds a bad sample",
            ("--data-list", "{D}/unknown_values.lst", "--check-data"),
            "--check-data: 1 sample(s) in 1 source(s): 1 problem(s) (1 unknown label values)")
    )  # fmt: skip
    table.append(Row("predict.py", "unreadable image", ("{D}/leftImg8bit/val/city/garbage_leftImg8bit.png",),
                     "{D}/leftImg8bit/val/city/garbage_leftImg8bit.png", "run"))  # fmt: skip
    for tool in ("train.py", "evaluate.py", "generate_submit.py", "predict.py"):
        table.append(Row(tool, "batch 0", ("--batch-size", "0"), "--batch-size must be"))
        table.append(
            Row(tool, "not a number", ("--batch-size", "two"),
                "--batch-size must be an integer, got 'two'")
        )  # fmt: skip
    table += [
        Row("train.py", "crop too small for the model",
            ("--method", "asp_oc_dsn", "--input-size", "17,17"),
            "--input-size 17,17 does not fit resnet18_asp_oc_dsn with --batch-size 1"),
        Row("train.py", "negative learning rate", ("--learning-rate", "-0.1"),
            "--learning-rate must be positive, got -0.1"),
        Row("train.py", "--recompute with --compile", ("--recompute", "--compile"),
            "--recompute does not work with --compile"),
        Row("evaluate.py", "negative scales", ("--use-ms", "--scales=-1,1"),
            "argument --scales: expected comma-separated positive numbers, got '-1,1'"),
        Row("evaluate.py", "negative whole-image scale", ("--whole-scale", "-1"),
            "--whole-scale must be positive"),
        Row("generate_submit.py", "negative scales", ("--use-ms", "--scales", "0.5,-2"),
            "argument --scales: expected comma-separated positive numbers"),
        Row("predict.py", "negative scales", ("--use-ms", "--scales", "-1"),
            "argument --scales: expected comma-separated positive numbers"),
        Row("train.py", "snapshot folder is a file", ("--snapshot-dir", "{C}/a_file"),
            "--snapshot-dir {C}/a_file exists and is not a folder", case=OUTPUT_IS_A_FILE),
        Row("train.py", "snapshot folder cannot be made", ("--snapshot-dir", "{C}/a_file/snap"),
            "--snapshot-dir {C}/a_file/snap cannot be created: {C}/a_file is not a folder"),
        Row("evaluate.py", "output folder is a file", ("--output-path", "{C}/a_file"),
            "--output-path {C}/a_file exists and is not a folder", case=OUTPUT_IS_A_FILE),
        Row("evaluate.py", "output folder cannot be made", ("--output-path", "{C}/a_file/out"),
            "--output-path {C}/a_file/out cannot be created: {C}/a_file is not a folder"),
        Row("generate_submit.py", "output folder is a file", ("--output-path", "{C}/a_file"),
            "--output-path {C}/a_file exists and is not a folder", case=OUTPUT_IS_A_FILE),
        Row("generate_submit.py", "output folder cannot be made",
            ("--output-path", "{C}/a_file/out"),
            "--output-path {C}/a_file/out cannot be created: {C}/a_file is not a folder"),
        Row("predict.py", "output folder is a file", ("--output-dir", "{C}/a_file"),
            "--output-dir {C}/a_file exists and is not a folder", case=OUTPUT_IS_A_FILE),
        Row("predict.py", "output folder cannot be made", ("--output-dir", "{C}/a_file/out"),
            "--output-dir {C}/a_file/out cannot be created: {C}/a_file is not a folder"),
        Row("predict.py", "missing input image", ("{D}/nowhere.png",),
            "1 input(s) skipped: {D}/nowhere.png: no such file or folder", "run",
            case=MISSING_INPUT),
        Row("export.py", "output folder is a file", ("--output", "{C}/a_file/model.safetensors"),
            "--output {C}/a_file/model.safetensors: {C}/a_file exists and is not a folder",
            case=OUTPUT_IS_A_FILE),
        Row("export.py", "output is a folder", ("--output", "{C}/read_only"),
            "--output {C}/read_only is a folder; give a file name"),
        Row("train.py", "read-only snapshot folder", ("--snapshot-dir", "{C}/read_only"),
            "--snapshot-dir {C}/read_only is not writable", case=UNWRITABLE),
        Row("evaluate.py", "read-only output folder", ("--output-path", "{C}/read_only"),
            "--output-path {C}/read_only is not writable", case=UNWRITABLE),
        Row("generate_submit.py", "read-only output folder", ("--output-path", "{C}/read_only"),
            "--output-path {C}/read_only is not writable", case=UNWRITABLE),
        Row("predict.py", "read-only output folder", ("--output-dir", "{C}/read_only"),
            "--output-dir {C}/read_only is not writable", case=UNWRITABLE),
        Row("export.py", "read-only output folder", ("--output", "{C}/read_only/m.safetensors"),
            "--output {C}/read_only/m.safetensors: {C}/read_only is not writable",
            case=UNWRITABLE),
        # python -m dataset.check
        Row("python -m dataset.check", "data folder missing", ("--data-dir", "{C}/nope"),
            "--data-dir {C}/nope is not a folder", case=MISSING_INPUT),
        Row("python -m dataset.check", "data folder is a file", ("--data-dir", "{C}/a_file"),
            "--data-dir {C}/a_file is a file, not a folder"),
        Row("python -m dataset.check", "negative workers", ("--workers", "-1"),
            "--workers must not be negative, got -1"),
        Row("python -m dataset.check", "unknown dataset", ("--dataset", "voc"),
            "argument --dataset: invalid choice: 'voc'"),
        # python -m dataset.make_lists
        Row("python -m dataset.make_lists", "data folder missing", ("--data-dir", "{C}/nope"),
            "--data-dir {C}/nope is not a folder", case=MISSING_INPUT),
        Row("python -m dataset.make_lists", "no images in the data folder",
            ("--data-dir", "{C}/empty_folder"),
            "{C}/empty_folder/leftImg8bit not found: expected the Cityscapes layout"),
        Row("python -m dataset.make_lists", "output folder is a file", ("--out", "{C}/a_file"),
            "--out {C}/a_file exists and is not a folder", case=OUTPUT_IS_A_FILE),
        Row("python -m dataset.make_lists", "output folder cannot be made",
            ("--out", "{C}/a_file/lists"),
            "--out {C}/a_file/lists cannot be created: {C}/a_file is not a folder"),
        Row("python -m dataset.make_lists", "read-only output folder", ("--out", "{C}/read_only"),
            "--out {C}/read_only is not writable", case=UNWRITABLE),
        Row("python -m dataset.make_lists", "a folder where a list goes",
            ("--out", "{C}/blocked_lists"),
            "cannot write the lists into {C}/blocked_lists: Is a directory", "run"),
        # python -m dataset.synthetic
        Row("python -m dataset.synthetic", "output folder is a file", ("--out", "{C}/a_file"),
            "--out {C}/a_file exists and is not a folder", case=OUTPUT_IS_A_FILE),
        Row("python -m dataset.synthetic", "output folder cannot be made",
            ("--out", "{C}/a_file/scenes"),
            "--out {C}/a_file/scenes cannot be created: {C}/a_file is not a folder"),
        Row("python -m dataset.synthetic", "read-only output folder", ("--out", "{C}/read_only"),
            "--out {C}/read_only is not writable", case=UNWRITABLE),
        Row("python -m dataset.synthetic", "preview is a folder", ("--preview", "{C}/read_only"),
            "--preview {C}/read_only is a folder; give a file name"),
        Row("python -m dataset.synthetic", "preview under a file",
            ("--preview", "{C}/a_file/preview.png"),
            "--preview {C}/a_file/preview.png: {C}/a_file exists and is not a folder"),
        Row("python -m dataset.synthetic", "a file where a scene folder goes",
            ("--out", "{C}/blocked_scenes"),
            "writing failed ({C}/blocked_scenes/leftImg8bit/train/aachen): Not a directory",
            "run"),
        Row("python -m dataset.synthetic", "scenes too small", ("--height", "16"),
            "--height must be at least 32, got 16"),
        Row("python -m dataset.synthetic", "no test split in the layout",
            ("--layout", "lip", "--test", "2"), "--test: the lip layout has no test split"),
        # python -m bench
        Row("python -m bench", "results file is a folder", ("--out", "{C}/read_only"),
            "--out {C}/read_only is a folder; give a file name"),
        Row("python -m bench", "results file under a file", ("--out", "{C}/a_file/results.md"),
            "--out {C}/a_file/results.md: {C}/a_file exists and is not a folder",
            case=OUTPUT_IS_A_FILE),
        Row("python -m bench", "results file in a read-only folder",
            ("--out", "{C}/read_only/results.md"),
            "--out {C}/read_only/results.md: {C}/read_only is not writable", case=UNWRITABLE),
        Row("python -m bench", "unknown benchmark", ("--only", "nope"),
            "argument --only: invalid choice: 'nope'"),
        # python -m utils.curve
        Row("python -m utils.curve", "metrics file missing", ("--metrics", "{C}/nope.jsonl"),
            "{C}/nope.jsonl", case=MISSING_INPUT),
        Row("python -m utils.curve", "picture under a file", ("--out", "{C}/a_file/curve.png"),
            "{C}/a_file", case=OUTPUT_IS_A_FILE),
        Row("python -m utils.curve", "picture in a read-only folder",
            ("--out", "{C}/read_only/curve.png"), "{C}/read_only", case=UNWRITABLE),
    ]  # fmt: skip
    return table


ROWS = rows()

# Row id -> why it fails, for a row waiting on a fix elsewhere; strict xfail, so the fix shows up
# as a failure until the row is taken off this list. Empty: every row passes.
KNOWN_FAILURES: dict[str, str] = {}


def param(row: Row):
    reason = KNOWN_FAILURES.get(row.id)
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(row, id=row.id, marks=marks)


class Unsafe:
    """Pickled as a reference to this class: torch.load(weights_only=True) must refuse it."""


def write_image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def make_world(root: Path) -> dict[str, str]:
    """Tiny Cityscapes-layout data, broken lists and samples, and checkpoints good and bad."""
    data, files = root / "data", root / "files"
    files.mkdir(parents=True)
    write_scenes(data, "train", 2, seed=1)
    val = write_scenes(data, "val", 1, seed=2).read_text()
    (data / "test.lst").write_text(val.split()[0] + "\n")
    (data / "empty.lst").write_text("\n")
    (data / "missing.lst").write_text(
        "leftImg8bit/val/city/nowhere_leftImg8bit.png gtFine/val/city/nowhere_gtFine_labelIds.png\n"
    )
    (data / "malformed.lst").write_text(val + "one two three\n")
    (data / "binary.lst").write_bytes(b"\x89PNG\r\n\x1a\n\xae\xff\x00 not a list\n")

    garbage = data / "leftImg8bit/val/city/garbage_leftImg8bit.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n but nothing else")
    label = np.full((64, 128), 7, np.uint8)
    write_image(data / "gtFine/val/city/garbage_gtFine_labelIds.png", label)
    (data / "unreadable.lst").write_text(
        "leftImg8bit/val/city/garbage_leftImg8bit.png gtFine/val/city/garbage_gtFine_labelIds.png\n"
    )
    image = val.split()[0]
    write_image(data / "gtFine/val/city/small_gtFine_labelIds.png", label[:32, :64])
    (data / "small_label.lst").write_text(f"{image} gtFine/val/city/small_gtFine_labelIds.png\n")
    unknown = label.copy()
    unknown[0, :3], unknown[1, :7] = 200, 250
    write_image(data / "gtFine/val/city/unknown_gtFine_labelIds.png", unknown)
    (data / "unknown_values.lst").write_text(
        f"{image} gtFine/val/city/unknown_gtFine_labelIds.png\n"
    )

    torch.manual_seed(0)
    good = get_segmentation_model("resnet18_base_oc_dsn", num_classes=19).state_dict()
    torch.save({"model": good}, files / "good.pth")
    (files / "empty.pth").write_bytes(b"")
    whole = (files / "good.pth").read_bytes()
    (files / "truncated.pth").write_bytes(whole[: len(whole) // 2])
    (files / "text.pth").write_text("these are not the weights you are looking for\n")
    torch.save({"encoder.weight": torch.zeros(3)}, files / "foreign.pth")
    five = get_segmentation_model("resnet18_base_oc_dsn", num_classes=5).state_dict()
    torch.save({"model": five}, files / "classes5.pth")
    with open(files / "unsafe.pth", "wb") as handle:
        pickle.dump({"model": Unsafe()}, handle)
    torch.save({"model": good, "extra": Unsafe()}, files / "unsafe.pth")
    (files / "a_file").write_text("a file, not a folder\n")
    (files / "empty_folder").mkdir()
    (files / "blocked_lists" / "train.lst").mkdir(parents=True)  # a folder where a list goes
    (files / "blocked_scenes").mkdir()
    (files / "blocked_scenes" / "leftImg8bit").write_text("a file where a folder goes\n")
    (files / "metrics.jsonl").write_text(
        '{"iteration": 1, "loss": 2.5}\n{"iteration": 2, "loss": 2.0, "mIoU": 0.1}\n'
    )
    (files / "read_only").mkdir()
    (files / "read_only").chmod(0o555)
    return {"D": str(data), "C": str(files)}


def fill(text: str, places: dict[str, str]) -> str:
    for key, value in places.items():
        text = text.replace("{" + key + "}", value)
    return text


def run_row(row: Row, places: dict[str, str], root: Path) -> subprocess.CompletedProcess:
    own = root / "rows" / re.sub(r"[^\w.-]+", "_", row.id)
    own.mkdir(parents=True)
    places = {**places, "O": str(own)}
    argv = [fill(a, places) for a in (*BASE[row.tool], *row.args)]
    if row.tool.startswith("python -m "):
        command = [sys.executable, "-m", row.tool.removeprefix("python -m ")]
    else:
        command = [sys.executable, str(REPO / row.tool)]
    command = [*without_capabilities(row), *command]
    result = subprocess.run(
        [*command, *argv],
        cwd=own,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    result.own = own  # type: ignore[attr-defined]
    return result


# Root writes into a read-only folder anyway, unless its capabilities are dropped (setpriv, from
# util-linux): then a read-only row runs as root without CAP_DAC_OVERRIDE.
SETPRIV = shutil.which("setpriv")
AS_ROOT = os.geteuid() == 0


def available(row: Row) -> bool:
    return not ("read-only" in row.name and AS_ROOT and SETPRIV is None)


def without_capabilities(row: Row) -> list[str]:
    """The command prefix that keeps root from writing into read-only folders, for its rows."""
    if "read-only" in row.name and AS_ROOT:
        return [SETPRIV, "--inh-caps=-all", "--bounding-set=-all"]
    return []


def test_every_tool_has_rows_for_each_case():
    """Every tool of the repository is in the table, with a row for each case that can occur."""
    assert {row.tool for row in ROWS} == set(tools()) == set(BASE)
    covered = {(row.tool, row.case) for row in ROWS if row.case}
    for tool in tools():
        for case in CASES:
            assert ((tool, case) in covered) != ((tool, case) in CANNOT_OCCUR), (tool, case)
    assert all(row.case in ("", *CASES) for row in ROWS)
    assert len({row.id for row in ROWS}) == len(ROWS)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every available row, run concurrently (each is its own process)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    places = make_world(root)
    todo = [row for row in ROWS if available(row)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(zip(todo, pool.map(lambda r: run_row(r, places, root), todo)))
    yield places, done
    (Path(places["C"]) / "read_only").chmod(0o755)


@pytest.mark.parametrize("row", [param(row) for row in ROWS])
def test_bad_input(row, results):
    if not available(row):
        pytest.skip("running as root without setpriv: a read-only folder is writable")
    places, done = results
    result = done[row]
    stderr = result.stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"{row.tool}: error: ")]
    context = f"exit {result.returncode}\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, context
    assert len(errors) == 1, context
    assert fill(row.cause, places) in errors[0], context
    if row.stage == "check":
        assert result.returncode == 2, context
        assert lines == errors, context
    else:
        assert result.returncode == 1, context
    # Nothing half-written: no temporary file, every checkpoint and PNG complete; nothing at all
    # from a check.
    written = [p for p in result.own.rglob("*") if p.is_file()]
    assert not [p for p in written if ".tmp-" in p.name], written
    for path in written:
        if path.suffix == ".pth":
            assert zipfile.is_zipfile(path), path
        if path.suffix == ".png":
            assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None, path
    if row.stage == "check":
        assert not written, written
