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


def test_default_lists_of_the_other_datasets():
    for name in ("lip", "pascal_context", "coco_stuff", "custom"):
        assert list_path(None, name, "val") is None  # scanned through their layouts
    assert list_path(None, "cityscapes_train", "train_extra") == (
        "./dataset/list/cityscapes/train_extra.lst"
    )


@pytest.mark.parametrize(
    "original", ["cityscapes_train", "cityscapes_test", "cityscapes_train_w_path"]
)
def test_original_dataset_names_mean_cityscapes(original):
    import argparse

    from engine.cli import add_data_args

    parser = argparse.ArgumentParser()
    add_data_args(parser, split="train")
    args = parser.parse_args(["--dataset", original, "--use-val=False", "--use-extra", "True"])
    assert args.dataset == "cityscapes" and args.use_val is False and args.use_extra is True
    assert parser.parse_args(["--use-val"]).use_val is True
    with pytest.raises(SystemExit):
        parser.parse_args(["--dataset", "voc"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--use-val", "maybe"])


def test_string_booleans_like_the_original():
    from engine.cli import str2bool

    for text in ("True", "true", "1", "yes", "Y"):
        assert str2bool(text) is True
    for text in ("False", "false", "0", "no", "N"):
        assert str2bool(text) is False
