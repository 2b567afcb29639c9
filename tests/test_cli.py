import pytest

from engine.cli import UserError, list_path


def test_default_lists_follow_dataset_and_split():
    assert list_path(None, "cityscapes", "val") == "./dataset/list/cityscapes/val.lst"
    assert list_path(None, "cityscapes", "test") == "./dataset/list/cityscapes/test.lst"
    assert list_path(None, "ade20k", "train") is None  # ADE20K scans its folders
    assert list_path("my.lst", "ade20k", "train") == "my.lst"
    assert list_path("None", "ade20k", "val") is None


def test_cityscapes_needs_a_list():
    with pytest.raises(UserError, match="--data-list none: cityscapes is read through list files"):
        list_path("none", "cityscapes", "train")
