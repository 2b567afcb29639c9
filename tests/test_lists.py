"""The shipped Cityscapes list files: official split sizes, cities, format, and make_lists agreement."""

import re
from pathlib import Path

import pytest

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
