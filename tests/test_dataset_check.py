"""python -m dataset.check and train.py --check-data: every problem of a dataset in one table;
a bad sample met during training stops the run with one line naming it."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

import train
from dataset import DATASETS, DatasetError, get_segmentation_dataset
from dataset.check import build_sources, check_sources, main
from tests.test_train import cli, write_scenes

CITYSCAPES = DATASETS["cityscapes"]


def image_rel(index: int, suffix: str = "png") -> str:
    return f"leftImg8bit/train/city/city_{index:06d}_000019_leftImg8bit.{suffix}"


def label_rel(index: int) -> str:
    return f"gtFine/train/city/city_{index:06d}_000019_gtFine_labelIds.png"


def write(root: Path, relative: str, array: np.ndarray, ext: str = ".png") -> str:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(ext, array)
    assert ok
    path.write_bytes(encoded.tobytes())
    return relative


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Path:
    """Scenes 0-3 are good; the list ``bad.lst`` names them and one broken sample per line."""
    root = tmp_path_factory.mktemp("broken")
    good = write_scenes(root, "train", 4, seed=1).read_text().splitlines()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)
    label = np.full((64, 128), 7, np.uint8)
    # 10: unreadable image (not an image at all); 11: label of another size;
    # 12: label values 200 (3 px) and 250 (7 px); 13: JPEG cut short (decodes, grey bottom).
    (root / image_rel(10)).write_bytes(b"this is not a PNG file")
    write(root, label_rel(10), label)
    write(root, image_rel(11), image)
    write(root, label_rel(11), label[:32, :64])
    write(root, image_rel(12), image)
    unknown = label.copy()
    unknown.flat[:3], unknown.flat[100:107] = 200, 250
    write(root, label_rel(12), unknown)
    jpeg = root / write(root, image_rel(13, "jpg"), image, ".jpg")
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size * 2 // 3])
    write(root, label_rel(13), label)
    lines = [
        good[0],  # line 1
        f"{image_rel(20)} {label_rel(0)}",  # line 2: missing image
        f"{image_rel(1)} {label_rel(21)}",  # line 3: missing label
        f"{image_rel(10)} {label_rel(10)}",  # line 4
        f"{image_rel(11)} {label_rel(11)}",  # line 5
        f"{image_rel(12)} {label_rel(12)}",  # line 6
        f"{image_rel(2)} {label_rel(2)} extra",  # line 7: three fields
        "",  # line 8: blank, skipped
        f"{image_rel(13, 'jpg')} {label_rel(13)}",  # line 9
        good[3],  # line 10
    ]
    (root / "bad.lst").write_text("\n".join(lines) + "\n")
    (root / "empty.lst").write_text("\n  \n")
    return root


def expected_problems(root: Path) -> set[tuple[str, str, str]]:
    bad, empty = root / "bad.lst", root / "empty.lst"
    return {
        ("missing image", f"{bad} line 2", str(root / image_rel(20))),
        ("missing label", f"{bad} line 3", str(root / label_rel(21))),
        ("unreadable image", f"{bad} line 4", str(root / image_rel(10))),
        ("size mismatch", f"{bad} line 5", str(root / label_rel(11))),
        ("unknown label values", f"{bad} line 6", str(root / label_rel(12))),
        ("too many fields", f"{bad} line 7", str(bad)),
        ("blank line", f"{bad} line 8", str(bad)),
        ("truncated image", f"{bad} line 9", str(root / image_rel(13, "jpg"))),
        ("empty list", str(empty), str(empty)),
        ("missing list", str(root / "nope.lst"), str(root / "nope.lst")),
    }


@pytest.mark.parametrize("workers", [0, 2])
def test_every_problem_is_found_once_with_file_and_line(broken, workers):
    lists = [("train", str(broken / n)) for n in ("bad.lst", "empty.lst", "nope.lst")]
    report = check_sources(
        CITYSCAPES, build_sources(CITYSCAPES, str(broken), lists), workers, progress=False
    )
    found = {(p.kind, p.where, p.file) for p in report.problems}
    assert found == expected_problems(broken)
    assert len(report.problems) == len(found)
    details = {p.kind: p.detail for p in report.problems}
    assert details["unknown label values"] == "200 (3 px), 250 (7 px)"
    assert details["size mismatch"] == "label 32x64, image 64x128"
    assert details["too many fields"] == (
        f"expected 2 fields (image label), found 3: '{image_rel(2)} {label_rel(2)} extra'"
    )
    assert details["blank line"] == "no fields"
    assert {p.kind: p.loaders for p in report.problems} == {
        "missing image": "fail", "missing label": "fail", "unreadable image": "fail",
        "size mismatch": "fail", "unknown label values": "fail", "too many fields": "fail",
        "blank line": "skip", "truncated image": "read", "empty list": "fail",
        "missing list": "fail",
    }  # fmt: skip
    assert "end marker" in details["truncated image"]
    assert report.samples == 8  # the list's well-formed lines


def test_command_line_prints_one_table_a_summary_and_fails(broken, capsys):
    status = main(
        ["--dataset", "cityscapes", "--data-dir", str(broken), "--workers", "0",
         "--list", str(broken / "bad.lst"), str(broken / "empty.lst")]
    )  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert status == 1
    assert re.fullmatch(r"problem +loaders +listed at +file +detail", out[0])
    assert len(out) == 1 + 9 + 1  # header, one row per problem, summary
    assert out[-1] == (
        "8 sample(s) in 2 source(s): 8 problem(s) (1 missing image, 1 missing label, "
        "1 unreadable image, 1 size mismatch, 1 unknown label values, 1 too many fields, "
        "1 truncated image, 1 empty list); 1 blank line(s), which the loaders skip"
    )
    assert re.fullmatch(
        rf"blank line +skip +{re.escape(str(broken / 'bad.lst'))} line 8 .*", out[7]
    )
    assert any(f"{broken / 'bad.lst'} line 6" in row and "250 (7 px)" in row for row in out)


def test_unusual_but_valid_data_passes_and_loads(tmp_path, capsys):
    """Grey, 4-channel and 16-bit images, a byte-order mark, CRLF line ends, trailing spaces and
    tabs, blank lines, absolute paths and train-id labels are all fine, for the check (which
    lists the blank line) and for the loader."""
    root = tmp_path / "data"
    rng = np.random.default_rng(1)
    label = np.full((24, 40), 7, np.uint8)
    images = {
        0: rng.integers(0, 255, (24, 40), dtype=np.uint8),  # grey
        1: rng.integers(0, 255, (24, 40, 4), dtype=np.uint8),  # with alpha
        2: rng.integers(0, 65535, (24, 40, 3), dtype=np.uint16),  # 16 bits
    }
    lines = []
    for index, image in images.items():
        write(root, image_rel(index), image)
        write(root, label_rel(index), label)
        lines.append(f"{image_rel(index)} {label_rel(index)}  ")
    trainid = "gtFine/train/city/city_000000_000019_gtFine_labelTrainIds.png"
    write(root, trainid, np.where(label == 7, 0, 255).astype(np.uint8))
    # As a Windows editor saves it: byte-order mark, CRLF line ends, trailing spaces and tabs.
    text = "\r\n".join([*lines, "", f"{root / image_rel(0)}\t{root / label_rel(0)}\t"]) + "\r\n"
    (root / "mixed.lst").write_bytes(codecs.BOM_UTF8 + text.encode())
    (root / "trainid.lst").write_text(f"{image_rel(1)} {trainid}\n")

    status = main(
        ["--dataset", "cityscapes", "--data-dir", str(root), "--workers", "0",
         "--list", str(root / "mixed.lst"), str(root / "trainid.lst")]
    )  # fmt: skip
    assert status == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and re.fullmatch(
        rf"blank line +skip +{re.escape(str(root / 'mixed.lst'))} line 4 +\S+ +no fields", out[1]
    )
    assert (
        out[2] == "5 sample(s) in 2 source(s): no problems; 1 blank line(s), which the loaders skip"
    )
    for name in ("mixed.lst", "trainid.lst"):
        dataset = get_segmentation_dataset(
            "cityscapes_train", root=str(root), list_path=str(root / name), crop_size=(17, 17)
        )
        for index in range(len(dataset)):
            image, target, _ = dataset[index]
            assert image.shape == (3, 17, 17) and set(target.unique().tolist()) <= {0, 255}


def test_every_line_that_is_not_a_sample_with_its_number(tmp_path, capsys):
    """Blank lines (the loaders skip them), an image without its label and too many fields (the
    loaders stop there), each with its list and line number; the loader agrees."""
    root = tmp_path / "data"
    label = np.full((24, 40), 7, np.uint8)
    for index in range(3):
        write(root, image_rel(index), np.zeros((24, 40, 3), np.uint8))
        write(root, label_rel(index), label)
    lines = [
        f"{image_rel(0)} {label_rel(0)}",  # 1
        "   ",  # 2: blank (spaces only)
        image_rel(1),  # 3: one field where two are needed
        f"{image_rel(2)} {label_rel(2)} {label_rel(2)}",  # 4: three fields
        "",  # 5: blank
        f"{image_rel(2)} {label_rel(2)}",  # 6
        "",  # 7: blank, before the end
    ]
    listed = root / "lines.lst"
    listed.write_bytes(codecs.BOM_UTF8 + "\r\n".join(lines).encode() + b"\r\n")
    status = main(["--dataset", "cityscapes", "--data-dir", str(root), "--workers", "0",
                   "--list", str(listed)])  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert status == 1
    rows = [re.split(r" {2,}", row) for row in out[1:-1]]
    assert rows == [
        ["blank line", "skip", f"{listed} line 2", str(listed), "no fields"],
        ["image without a label", "fail", f"{listed} line 3", str(listed),
         f"1 field where the list's other lines have 2 (image label): '{root / image_rel(1)}'"],
        ["too many fields", "fail", f"{listed} line 4", str(listed),
         f"expected 1 or 2 fields (image label), found 3: "
         f"'{image_rel(2)} {label_rel(2)} {label_rel(2)}'"],
        ["blank line", "skip", f"{listed} line 5", str(listed), "no fields"],
        ["blank line", "skip", f"{listed} line 7", str(listed), "no fields"],
    ]  # fmt: skip
    assert out[-1] == (
        "2 sample(s) in 1 source(s): 2 problem(s) (1 image without a label, 1 too many fields); "
        "3 blank line(s), which the loaders skip"
    )
    # A training list (two fields on every line): the same lines, and the loader stops at line 3.
    sources = build_sources(CITYSCAPES, str(root), [("train", str(listed))])
    report = check_sources(CITYSCAPES, sources, 0, progress=False)
    assert [(p.kind, p.where) for p in report.problems] == [
        ("blank line", f"{listed} line 2"),
        ("image without a label", f"{listed} line 3"),
        ("too many fields", f"{listed} line 4"),
        ("blank line", f"{listed} line 5"),
        ("blank line", f"{listed} line 7"),
    ]
    assert report.problems[1].detail == (
        f"expected 2 fields (image label), found 1: '{image_rel(1)}'"
    )
    with pytest.raises(DatasetError) as error:
        get_segmentation_dataset("cityscapes_train", root=str(root), list_path=str(listed))
    assert str(error.value) == (
        f"{listed} line 3: expected 2 fields (image label), found 1: '{image_rel(1)}'"
    )
    # Without the two bad lines the loader reads lines 1 and 6, as the check does.
    del lines[2:4]
    listed.write_bytes(codecs.BOM_UTF8 + "\r\n".join(lines).encode() + b"\r\n")
    dataset = get_segmentation_dataset("cityscapes_train", root=str(root), list_path=str(listed))
    assert [s.where for s in dataset.samples] == [f"{listed} line 1", f"{listed} line 4"]
    sources = build_sources(CITYSCAPES, str(root), [("train", str(listed))])
    report = check_sources(CITYSCAPES, sources, 0, progress=False)
    assert report.ok and [p.where for p in report.problems] == [
        f"{listed} line 2", f"{listed} line 3", f"{listed} line 5",
    ]  # fmt: skip


def test_usage_errors_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--dataset", "cityscapes", "--data-dir", str(tmp_path / "nope")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"python -m dataset.check: error: --data-dir {tmp_path / 'nope'} is not a folder\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["--dataset", "cityscapes", "--data-dir", str(tmp_path), "--workers", "-1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "python -m dataset.check: error: --workers must not be negative, got -1\n"
    )


# ------------------------------------------------------------------------------------------------
# train.py


def run_main(argv: list[str]) -> None:
    train.main(train.get_args_parser().parse_args(argv))


def test_train_check_data_stops_before_training_with_the_table(broken, tmp_path, capsys):
    snapshot = tmp_path / "snap"
    with pytest.raises(SystemExit) as exit_info:
        run_main([*cli(broken, snapshot, "--data-list", str(broken / "bad.lst")), "--check-data"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "train.py: error: --check-data: 8 sample(s) in 1 source(s): 7 problem(s) "
        "(1 missing image, 1 missing label, 1 unreadable image, 1 size mismatch, "
        "1 unknown label values, 1 too many fields, 1 truncated image); 1 blank line(s), which "
        "the loaders skip, listed above"
    ]
    assert f"{broken / 'bad.lst'} line 4" in captured.out
    assert not snapshot.exists()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_bad_sample_met_in_training_stops_with_file_and_line(broken, tmp_path, capsys, workers):
    """Unknown label values are found only when the pixels are read: mid-run."""
    listed = broken / "late_bad.lst"
    good = [f"{image_rel(i)} {label_rel(i)}" for i in range(3)]
    listed.write_text("\n".join([*good, f"{image_rel(12)} {label_rel(12)}"]) + "\n")
    snapshot = tmp_path / "snap"
    argv = cli(broken, snapshot, "--data-list", str(listed), "--num-steps", "4",
               "--save-pred-every", "1", "--workers", workers)  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        run_main(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("train.py: error:")]
    assert len(errors) == 1
    found = re.fullmatch(
        rf"train\.py: error: {re.escape(str(listed))} line 4: label \S+ contains ids \[200, 250\] "
        r"that the label table does not know; training stopped before iteration (\d+), last good "
        r"checkpoint: (\S+)",
        errors[0],
    )
    assert found, errors[0]
    done = int(found.group(1)) - 1
    expected = str(snapshot / f"checkpoint_{done}.pth") if done else "none"
    assert found.group(2) == expected
    assert sorted(p.name for p in snapshot.glob("*.pth")) == [
        f"checkpoint_{i}.pth" for i in range(1, done + 1)
    ]


def test_without_lists_the_dataset_folders_are_scanned(tmp_path, capsys):
    from tests.conftest import write_ade_tree

    root = write_ade_tree(tmp_path / "ade", size=(20, 30))
    argv = ["--dataset", "ade20k", "--data-dir", str(root), "--workers", "0"]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines() == ["5 sample(s) in 2 source(s): no problems"]

    label = root / "annotations" / "validation" / "ADE_val_00000002.png"
    broken = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    broken[0, 0] = 200  # ADE20K labels hold 0..150
    cv2.imwrite(str(label), broken)
    assert main(argv) == 1
    out = capsys.readouterr().out.splitlines()
    image = root / "images" / "validation" / "ADE_val_00000002.jpg"
    assert len(out) == 3 and out[1].startswith("unknown label values")
    assert f"{image}  {label}  200 (1 px)" in out[1]
