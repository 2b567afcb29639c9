"""The shipped Cityscapes list files (official split sizes, cities, format, make_lists agreement),
and list files as editors save them (byte-order mark, CRLF, trailing spaces, blank lines)."""

import codecs
import re
from pathlib import Path

import pytest

from dataset.base import DatasetError, list_file_lines, read_list
from dataset.make_lists import make_lists

LIST_DIR = Path(__file__).resolve().parents[1] / "dataset" / "list" / "cityscapes"
# Official Cityscapes gtFine splits: image counts and cities.
SPLITS = {
    "train": (
        2975,
        {
            "aachen",
            "bochum",
            "bremen",
            "cologne",
            "darmstadt",
            "dusseldorf",
            "erfurt",
            "hamburg",
            "hanover",
            "jena",
            "krefeld",
            "monchengladbach",
            "strasbourg",
            "stuttgart",
            "tubingen",
            "ulm",
            "weimar",
            "zurich",
        },
    ),
    "val": (500, {"frankfurt", "lindau", "munster"}),
    "test": (1525, {"berlin", "bielefeld", "bonn", "leverkusen", "mainz", "munich"}),
}
PAIR = re.compile(
    r"leftImg8bit/(\w+)/([a-z]+)/(\2_\d{6}_\d{6})_leftImg8bit\.png "
    r"gtFine/\1/\2/\3_gtFine_labelIds\.png"
)
IMAGE_ONLY = re.compile(r"leftImg8bit/(test)/([a-z]+)/(\2_\d{6}_\d{6})_leftImg8bit\.png")


def read(name: str) -> list[str]:
    return (LIST_DIR / f"{name}.lst").read_text().splitlines()


@pytest.mark.parametrize("split", SPLITS)
def test_split_sizes_cities_and_format(split):
    count, cities = SPLITS[split]
    lines = read(split)
    assert len(lines) == count and len(set(lines)) == count
    pattern = IMAGE_ONLY if split == "test" else PAIR
    seen = set()
    for number, line in enumerate(lines, 1):
        match = pattern.fullmatch(line)
        assert match, f"{split}.lst line {number}: {line!r}"
        assert match.group(1) == split
        seen.add(match.group(2))
    assert seen == cities
    assert lines == sorted(lines)


def test_trainval_is_train_then_val():
    assert read("trainval") == read("train") + read("val")


def test_make_lists_rebuilds_the_shipped_lists(tmp_path):
    """A tree holding exactly the listed files gives back the shipped lists byte for byte."""
    for split in SPLITS:
        for line in read(split):
            for relative in line.split():
                path = tmp_path / "data" / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
    counts = make_lists(tmp_path / "data", tmp_path / "lists")
    assert counts == {"test": 1525, "train": 2975, "val": 500, "trainval": 3475}
    for name in ("train", "val", "test", "trainval"):
        assert (tmp_path / "lists" / f"{name}.lst").read_bytes() == (
            LIST_DIR / f"{name}.lst"
        ).read_bytes()


def test_make_lists_writes_the_coarse_split(tmp_path):
    """train_extra pairs its images with gtCoarse labels; trainval stays train + val."""
    for rel in (
        "leftImg8bit/train/ulm/ulm_000000_000019_leftImg8bit.png",
        "gtFine/train/ulm/ulm_000000_000019_gtFine_labelIds.png",
        "leftImg8bit/val/lindau/lindau_000000_000019_leftImg8bit.png",
        "gtFine/val/lindau/lindau_000000_000019_gtFine_labelIds.png",
        "leftImg8bit/train_extra/bamberg/bamberg_000000_000019_leftImg8bit.png",
        "gtCoarse/train_extra/bamberg/bamberg_000000_000019_gtCoarse_labelIds.png",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch()
    counts = make_lists(tmp_path)
    assert counts == {"train": 1, "train_extra": 1, "val": 1, "trainval": 2}
    assert (tmp_path / "train_extra.lst").read_text() == (
        "leftImg8bit/train_extra/bamberg/bamberg_000000_000019_leftImg8bit.png "
        "gtCoarse/train_extra/bamberg/bamberg_000000_000019_gtCoarse_labelIds.png\n"
    )
    assert "train_extra" not in (tmp_path / "trainval.lst").read_text()
    (tmp_path / "gtCoarse/train_extra/bamberg/bamberg_000000_000019_gtCoarse_labelIds.png").unlink()
    (tmp_path / "train.lst").unlink()
    with pytest.raises(FileNotFoundError, match="gtCoarse_labelIds.png for image"):
        make_lists(tmp_path)
    assert not (tmp_path / "train.lst").exists()  # every list is checked before any is written


# ------------------------------------------------------------------------------------------------
# List files as editors and other tools save them


EDITOR_LINES = ["a.png a_label.png", "", "b.png\tb_label.png  ", "   ", "c.png c_label.png\t"]
FIELDS = [
    (1, ["a.png", "a_label.png"]),
    (2, []),
    (3, ["b.png", "b_label.png"]),
    (4, []),
    (5, ["c.png", "c_label.png"]),
]


@pytest.mark.parametrize(
    "encoded",
    [
        "\n".join(EDITOR_LINES).encode(),  # no final line end
        ("\n".join(EDITOR_LINES) + "\n").encode(),
        codecs.BOM_UTF8 + ("\r\n".join(EDITOR_LINES) + "\r\n").encode(),  # Windows editors
        ("\r".join(EDITOR_LINES) + "\r").encode(),  # classic Mac line ends
        ("\r\n".join(EDITOR_LINES) + "\r\n").encode("utf-16"),  # Windows "Unicode" (with BOM)
    ],
    ids=["lf-no-final", "lf", "bom-crlf", "cr", "utf16"],
)
def test_list_lines_as_editors_save_them(tmp_path, encoded):
    path = tmp_path / "train.lst"
    path.write_bytes(encoded)
    assert list_file_lines(path) == FIELDS
    entries = read_list(path, "/root", (2,))
    assert entries == [
        (1, ["/root/a.png", "/root/a_label.png"]),
        (3, ["/root/b.png", "/root/b_label.png"]),
        (5, ["/root/c.png", "/root/c_label.png"]),
    ]


def test_a_final_blank_line_is_a_line_and_a_lone_final_line_end_is_not(tmp_path):
    path = tmp_path / "val.lst"
    path.write_bytes(b"a.png b.png\n\n")
    assert list_file_lines(path) == [(1, ["a.png", "b.png"]), (2, [])]
    path.write_bytes(b"")
    assert list_file_lines(path) == []


def test_list_lines_that_are_not_samples(tmp_path):
    path = tmp_path / "train.lst"
    path.write_bytes(codecs.BOM_UTF8 + b"a.png a_label.png\r\n\r\nb.png\r\n")
    with pytest.raises(DatasetError) as error:
        read_list(path, "/root", (2,))
    assert str(error.value) == f"{path} line 3: expected 2 fields (image label), found 1: 'b.png'"
    path.write_bytes(b"a.png a_label.png extra\n")
    with pytest.raises(DatasetError) as error:
        read_list(path, "/root", (1, 2))
    assert str(error.value) == (
        f"{path} line 1: expected 1 or 2 fields (image label), found 3: 'a.png a_label.png extra'"
    )
    path.write_bytes(codecs.BOM_UTF8 + b"\r\n  \r\n")
    with pytest.raises(DatasetError, match=f"^list file {path} is empty$"):
        read_list(path, "/root", (2,))
    path.write_bytes(b"a.png \xff\n")
    with pytest.raises(DatasetError, match=r"is not UTF-8 text \(byte 6\)"):
        read_list(path, "/root", (2,))
