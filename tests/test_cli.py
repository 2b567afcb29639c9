"""engine.cli / utils.cli: list paths, the two kinds of boolean flag on every command line, and
the flag types that end a bad value in argparse's one line.

The command lines are found in the repository (``entry_points``) and their parsers taken from
the tools themselves (``parser_of``), so a new tool or a new boolean flag is tested without being
listed here.
"""

from __future__ import annotations

import argparse
import os
import re
import runpy
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from bench.__main__ import BENCHMARKS
from engine.cli import UserError, list_path
from utils import cli

REPO = Path(__file__).resolve().parents[1]
# The tools whose original OCNet command lines pass --flag True / --flag False.
ORIGINAL_STYLE = {"train.py", "evaluate.py", "generate_submit.py"}
MAIN_GUARD = re.compile(r"^if __name__ == .__main__.:", re.MULTILINE)


# ------------------------------------------------------------------------------------------------
# Every command line of the repository


def entry_points() -> dict[str, Path]:
    """Every command line found in the repository: ``python <file>.py`` for a script at the top,
    ``python -m <module>`` for a package's ``__main__.py`` or a module with a ``__main__`` block."""
    found = {}
    for path in sorted(REPO.rglob("*.py")):
        relative = path.relative_to(REPO)
        if relative.parts[0] in ("tests", ".venv") or relative.parts[0].startswith("."):
            continue
        if path.name != "__main__.py" and not MAIN_GUARD.search(path.read_text()):
            continue
        if len(relative.parts) == 1:
            found[path.name] = path
        else:
            module = relative.with_suffix("").parts
            module = module[:-1] if module[-1] == "__main__" else module
            found["python -m " + ".".join(module)] = path
    return found


# Entry points that are parts of another one, with the reason; everything else found is a tool.
INTERNAL = {
    f"python -m bench.{name}": f"one benchmark of python -m bench (--only {name})"
    for name in BENCHMARKS
}


def tools() -> list[str]:
    return sorted(set(entry_points()) - set(INTERNAL))


def test_every_entry_point_is_a_tool_or_a_part_of_one():
    found = set(entry_points())
    assert set(INTERNAL) <= found, set(INTERNAL) - found
    assert set(tools()) == {
        "train.py", "evaluate.py", "generate_submit.py", "predict.py", "export.py",
        "python -m bench", "python -m dataset.check", "python -m dataset.make_lists",
        "python -m dataset.synthetic", "python -m utils.curve",
    }  # fmt: skip


class Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def parser_of(tool: str) -> argparse.ArgumentParser:
    """The parser ``tool`` builds: its module runs as ``__main__`` until it parses."""

    def capture(self, *args, **kwargs):
        raise Captured(self)

    path = entry_points()[tool]
    saved = argparse.ArgumentParser.parse_known_args, sys.argv
    argparse.ArgumentParser.parse_known_args = capture
    sys.argv = [str(path)]
    try:
        with warnings.catch_warnings():
            # runpy's note that the module was imported before (by this test or its package)
            warnings.simplefilter("ignore", RuntimeWarning)
            if tool.startswith("python -m "):
                runpy.run_module(tool.removeprefix("python -m "), run_name="__main__")
            else:
                runpy.run_path(str(path), run_name="__main__")
    except Captured as captured:
        return captured.parser
    finally:
        argparse.ArgumentParser.parse_known_args, sys.argv = saved
    raise AssertionError(f"{tool} did not parse a command line")


PARSERS = {tool: parser_of(tool) for tool in tools()}


def is_boolean(action: argparse.Action) -> bool:
    return isinstance(
        action,
        (
            cli.BooleanWordAction,
            argparse.BooleanOptionalAction,
            argparse._StoreTrueAction,
            argparse._StoreFalseAction,
        ),
    )


def boolean_flags() -> list[tuple[str, str]]:
    """``(tool, --flag)`` for every boolean of every tool (an ``add_flag``'s hidden ``--no-flag``
    is tested with its flag)."""
    flags = []
    for tool, parser in PARSERS.items():
        for action in parser._actions:
            if is_boolean(action) and action.help != argparse.SUPPRESS:
                flags.append((tool, action.option_strings[0]))
    return flags


BOOLEAN_FLAGS = boolean_flags()


def action_of(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return parser._option_string_actions[flag]


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cli")
    (root / "a_file").write_text("x\n")
    (root / "a_folder").mkdir()
    return {"file": str(root / "a_file"), "folder": str(root / "a_folder")}


def required_words(parser: argparse.ArgumentParser, places: dict[str, str]) -> list[str]:
    """Values for the tool's required flags and positionals, so that a parse can succeed."""
    words = []
    for action in parser._actions:
        if action.option_strings and not action.required:
            continue
        if action.choices:
            value = str(next(iter(action.choices)))
        elif action.type in (cli.existing_folder, cli.output_folder):
            value = places["folder"]
        else:
            value = places["file"]
        words += [action.option_strings[0], value] if action.option_strings else [value]
    return words


def parse(tool: str, words: list[str], places: dict[str, str]):
    """``(namespace, words left over)`` of ``tool`` given ``words`` after its required ones."""
    parser = PARSERS[tool]
    optionals = [w for w in required_words(parser, places)]
    return parser.parse_known_args([*optionals, *words])


def test_every_tool_has_booleans_of_its_kind():
    """The original's tools use add_flag booleans only; every other tool plain switches only."""
    for tool, flag in BOOLEAN_FLAGS:
        action = action_of(PARSERS[tool], flag)
        if tool in ORIGINAL_STYLE:
            assert isinstance(action, cli.BooleanWordAction), (tool, flag)
        else:
            assert action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction), flag
    by_tool = {tool: {f for t, f in BOOLEAN_FLAGS if t == tool} for tool in PARSERS}
    assert len(by_tool["train.py"]) == 14 and "--use-flip" in by_tool["evaluate.py"]
    assert by_tool["predict.py"] == {"--color", "--overlay", "--use-ms", "--use-flip"}
    assert by_tool["export.py"] == {"--verify"} and by_tool["python -m bench"] == {"--quick"}


def flag_params(original: bool) -> list:
    return [
        pytest.param(tool, flag, id=f"{tool} {flag}")
        for tool, flag in BOOLEAN_FLAGS
        if (tool in ORIGINAL_STYLE) == original
    ]


@pytest.mark.parametrize(("tool", "flag"), flag_params(original=True))
def test_original_style_boolean(tool, flag, places, capsys):
    """--flag, --flag True, --flag false, --flag=no, --no-flag; any other word is not eaten."""
    dest = action_of(PARSERS[tool], flag).dest
    negative = "--no-" + flag[2:]
    for words, value in (
        ([flag], True),
        ([flag, "True"], True),
        ([flag, "ON"], True),
        ([flag, "false"], False),
        ([flag + "=no"], False),
        ([flag + "=Yes"], True),
        ([negative], False),
        ([flag, "0", negative, flag], True),
        ([], False),
    ):
        namespace, rest = parse(tool, words, places)
        assert (getattr(namespace, dest), rest) == (value, []), words
    namespace, rest = parse(tool, [flag, "photos/"], places)
    assert (getattr(namespace, dest), rest) == (True, ["photos/"])
    namespace, rest = parse(tool, [flag, "-1", negative, "True"], places)
    assert (getattr(namespace, dest), rest) == (False, ["-1", "True"])
    for words, message in (
        ([flag + "=maybe"], f"argument {flag}: expected a boolean (true/false), got 'maybe'"),
        ([negative + "=yes"], f"argument {negative}: ignored explicit argument 'yes'"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            parse(tool, words, places)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err == f"{tool}: error: {message} (see {tool} --help)\n"


@pytest.mark.parametrize(("tool", "flag"), flag_params(original=False))
def test_plain_switch(tool, flag, places, capsys):
    """--flag and --no-flag (where offered) set it; a word after it is never its value."""
    action = action_of(PARSERS[tool], flag)
    on = not isinstance(action, argparse._StoreFalseAction)
    namespace, rest = parse(tool, [flag], places)
    assert (getattr(namespace, action.dest), rest) == (on, [])
    positional = [a.dest for a in PARSERS[tool]._actions if not a.option_strings]
    for word in ("photos/", "True", "false"):
        namespace, rest = parse(tool, [flag, word], places)
        kept = rest + [w for d in positional for w in getattr(namespace, d)]
        assert getattr(namespace, action.dest) is on and word in kept, (flag, word)
    name = flag
    if isinstance(action, argparse.BooleanOptionalAction):
        negative = "--no-" + flag[2:]
        namespace, rest = parse(tool, [flag, negative], places)
        assert (getattr(namespace, action.dest), rest) == (False, [])
        name = f"{flag}/{negative}"
    with pytest.raises(SystemExit) as exit_info:
        parse(tool, [flag + "=no"], places)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"{tool}: error: argument {name}: ignored explicit argument 'no' (see {tool} --help)\n"
    )


def test_abbreviations_and_the_end_of_options():
    parser = cli.ArgumentParser(prog="t")
    cli.add_flag(parser, "--use-flip", "flip")
    cli.add_flag(parser, "--use-ms", "ms")
    parser.add_argument("rest", nargs="*")
    assert vars(parser.parse_args(["--use-fl", "no", "x"])) == {
        "use_flip": False, "use_ms": False, "rest": ["x"],
    }  # fmt: skip
    assert vars(parser.parse_args(["--use-m", "x"])) == {
        "use_flip": False, "use_ms": True, "rest": ["x"],
    }  # fmt: skip
    assert parser.parse_args(["--", "--use-ms", "true"]).rest == ["--use-ms", "true"]


def test_predict_overlay_then_a_folder():
    """The command of the issue: the folder after --overlay is an input, not a boolean."""
    args = PARSERS["predict.py"].parse_args(["--ckpt", "model.pth", "--overlay", "photos/"])
    assert (args.overlay, args.inputs, args.ckpt) == (True, ["photos/"], "model.pth")


# ------------------------------------------------------------------------------------------------
# Flag types


def type_error(parse_value, value: str) -> str:
    with pytest.raises(cli.FlagValueError) as info:
        parse_value(value)
    return str(info.value)


def test_number_types():
    assert cli.positive_int("3") == 3 and cli.non_negative_int("0") == 0
    assert type_error(cli.positive_int, "0") == "must be positive, got 0"
    assert type_error(cli.positive_int, "two") == "must be an integer, got 'two'"
    assert type_error(cli.positive_int, "1.5") == "must be an integer, got '1.5'"
    assert type_error(cli.non_negative_int, "-1") == "must not be negative, got -1"
    assert type_error(cli.int_at_least(32), "31") == "must be at least 32, got 31"
    assert cli.positive_float("1e-2") == 0.01 and cli.non_negative_float("0") == 0.0
    assert type_error(cli.positive_float, "0") == "must be positive, got 0"
    assert type_error(cli.positive_float, "nan") == "must be positive, got nan"
    assert type_error(cli.positive_float, "fast") == "must be a number, got 'fast'"
    assert type_error(cli.non_negative_float, "-0.5") == "must not be negative, got -0.5"
    unit = cli.number_in(0, 1, low_open=True)
    assert unit("1") == 1.0
    assert type_error(unit, "0") == "must lie in (0, 1], got 0"
    assert type_error(cli.number_in(0, 1, high_open=True), "1") == "must lie in [0, 1), got 1"


def test_path_types(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    f, d = str(tmp_path / "file"), str(tmp_path / "dir")
    assert cli.existing_folder(d) == d
    assert type_error(cli.existing_folder, f) == f"{f} is a file, not a folder"
    assert type_error(cli.existing_folder, d + "x") == f"{d}x is not a folder"
    assert cli.output_folder(d) == d and cli.output_folder(f"{d}/new/deeper") == f"{d}/new/deeper"
    assert not (tmp_path / "dir" / "new").exists()  # checked, not created
    assert type_error(cli.output_folder, f) == f"{f} exists and is not a folder"
    assert type_error(cli.output_folder, f"{f}/out/x") == (
        f"{f}/out/x cannot be created: {f} is not a folder"
    )
    assert cli.output_file(f) == f and cli.output_file(f"{d}/new/m.onnx") == f"{d}/new/m.onnx"
    assert type_error(cli.output_file, d) == f"{d} is a folder; give a file name"
    assert type_error(cli.output_file, f"{f}/m.onnx") == (
        f"{f}/m.onnx: {f} exists and is not a folder"
    )
    with cli.paths_unchecked():
        assert cli.existing_folder(f) == f and cli.output_folder(f) == f
    assert type_error(cli.output_folder, f)  # checked again after the block


def test_a_bad_value_is_one_line_naming_the_flag(tmp_path, capsys):
    """The tools' own parsers: the flag, then what is wrong, and nothing else on stderr."""
    for tool, words, line in (
        ("train.py", ["--num-steps", "0"], "--num-steps must be positive, got 0"),
        ("train.py", ["--learning-rate=-1"], "--learning-rate must be positive, got -1"),
        ("train.py", ["--ohem-thres", "1.5"], "--ohem-thres must lie in (0, 1], got 1.5"),
        ("train.py", ["--snapshot-dir", str(tmp_path / "f")],
         f"--snapshot-dir {tmp_path / 'f'} exists and is not a folder"),
        ("evaluate.py", ["--overlap", "1"], "--overlap must lie in [0, 1), got 1"),
        ("predict.py", ["--alpha", "2", "x.png"], "--alpha must lie in [0, 1], got 2"),
        ("predict.py", ["--workers", "-2", "x.png"], "--workers must not be negative, got -2"),
        ("export.py", ["--output", str(tmp_path)],
         f"--output {tmp_path} is a folder; give a file name"),
        ("python -m dataset.synthetic", ["--height", "16"], "--height must be at least 32, got 16"),
        ("python -m dataset.make_lists", ["--data-dir", str(tmp_path / "f")],
         f"--data-dir {tmp_path / 'f'} is a file, not a folder"),
        ("python -m bench", ["--repeats", "0"], "--repeats must be positive, got 0"),
    ):  # fmt: skip
        (tmp_path / "f").write_text("a file\n")
        parser = PARSERS[tool]
        required = ["--ckpt", "m.pth"] if "--ckpt" in parser._option_string_actions else []
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([*required, *words])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err == f"{tool}: error: {line}\n", words


def test_a_word_after_a_flag_that_nothing_takes(capsys):
    """train.py has no positional inputs: the word after --ohem was meant as its value."""
    with pytest.raises(SystemExit):
        PARSERS["train.py"].parse_args(["--ohem", "maybe"])
    assert capsys.readouterr().err == (
        "train.py: error: argument --ohem: expected a boolean (true/false), got 'maybe' "
        "(see train.py --help)\n"
    )
    with pytest.raises(SystemExit):
        PARSERS["train.py"].parse_args(["--ohem", "--fix-lr", "maybe"])
    assert "argument --fix-lr: expected a boolean (true/false), got 'maybe'" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        PARSERS["train.py"].parse_args(["--ohem=yes", "maybe"])
    assert capsys.readouterr().err == (
        "train.py: error: unrecognized arguments: maybe (see train.py --help)\n"
    )


SETPRIV = shutil.which("setpriv")


@pytest.mark.skipif(
    os.geteuid() == 0 and SETPRIV is None, reason="root without setpriv writes anywhere"
)
def test_read_only_output_folder(tmp_path):
    """As root, in a process without capabilities (setpriv), which a 0o500 folder stops."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    check = (
        "import sys; from utils import cli\n"
        "for path in sys.argv[1:]:\n"
        "    try: cli.output_folder(path)\n"
        "    except cli.FlagValueError as error: print(error)\n"
    )
    prefix = [SETPRIV, "--inh-caps=-all", "--bounding-set=-all"] if os.geteuid() == 0 else []
    try:
        result = subprocess.run(
            [*prefix, sys.executable, "-c", check, str(locked), f"{locked}/new", str(tmp_path)],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        locked.chmod(0o700)
    assert result.stdout.splitlines() == [
        f"{locked} is not writable",
        f"{locked}/new cannot be created: {locked} is not writable",
    ], result.stderr


# ------------------------------------------------------------------------------------------------
# Lists and booleans as values


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
def test_original_dataset_names_mean_cityscapes(original, capsys):
    from engine.cli import add_data_args

    parser = cli.ArgumentParser(prog="t")
    add_data_args(parser, split="train")
    args = parser.parse_args(["--dataset", original, "--use-val=False", "--use-extra", "True"])
    assert args.dataset == "cityscapes" and args.use_val is False and args.use_extra is True
    assert parser.parse_args(["--use-val"]).use_val is True
    with pytest.raises(SystemExit):
        parser.parse_args(["--dataset", "voc"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        parser.parse_args(["--use-val", "maybe"])
    assert capsys.readouterr().err == (
        "t: error: argument --use-val: expected a boolean (true/false), got 'maybe' "
        "(see t --help)\n"
    )


def test_string_booleans_like_the_original():
    for text in ("True", "true", "1", "yes", "Y", "on"):
        assert cli.str2bool(text) is True
    for text in ("False", "false", "0", "no", "N", "OFF"):
        assert cli.str2bool(text) is False
    with pytest.raises(
        argparse.ArgumentTypeError, match=r"^expected a boolean \(true/false\), got 'maybe'$"
    ):
        cli.str2bool("maybe")
