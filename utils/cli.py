"""Command-line pieces every tool shares: one-line errors, boolean flags and switches, flag types.

They sit in the bottom layer because the dataset tools (``python -m dataset.check``,
``dataset.make_lists``, ``dataset.synthetic``) may not import ``engine``; ``engine.cli`` re-exports
them beside the model, data and device flags of train.py, evaluate.py, generate_submit.py,
predict.py and export.py.

Two kinds of boolean flag:

- ``add_switch``: a plain switch, ``--overlay`` / ``--no-overlay``
  (``argparse.BooleanOptionalAction``). It never takes a value, so a word after it is the next
  argument. Every tool new to this project uses these.
- ``add_flag``: the original OCNet's ``--flag True`` / ``--flag=False`` style, kept for train.py,
  evaluate.py and generate_submit.py whose original run scripts pass it, plus ``--flag`` and
  ``--no-flag``. A following word is the flag's value only when it is a boolean word
  (``BOOLEAN_WORDS``); anything else stays for the next argument (see
  ``ArgumentParser.parse_known_args``).

The flag types (``positive_int``, ``output_folder``, ...) raise ``FlagValueError``, so a bad value
ends in one line at parse time, before any work: ``<prog>: error: --num-steps must be positive,
got 0``.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

# Exit statuses of every tool; see ``fail``.
USAGE_STATUS = 2
RUN_STATUS = 1

TRUE_WORDS = ("1", "true", "yes", "y", "on")
FALSE_WORDS = ("0", "false", "no", "n", "off")
BOOLEAN_WORDS = TRUE_WORDS + FALSE_WORDS


def fail(prog: str, message: str, status: int = USAGE_STATUS) -> NoReturn:
    """Print ``<prog>: error: <message>`` on stderr (argparse's format) and exit with ``status``.

    Exit-status rule of every tool: 2 (``USAGE_STATUS``, as argparse) when the command cannot run
    as given, found before any work starts: argparse's own errors, the checks of flag values,
    process layout, files, lists and checkpoints that run once in the launching process; 1
    (``RUN_STATUS``) when a started run fails: a broken image met while predicting, a non-finite
    loss, a ``--resume`` checkpoint of other settings, a failing process, an output that cannot be
    written. Either way there is a single line and no traceback.
    """
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(status)


def is_boolean_word(word: str) -> bool:
    return word.lower() in BOOLEAN_WORDS


def str2bool(value: str) -> bool:
    """argparse type for the original's ``--flag True/False`` (and ``--flag=False``) style."""
    lowered = str(value).lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(str2bool_problem(value))


def str2bool_problem(value: str) -> str:
    return f"expected a boolean (true/false), got {value!r}"


class BooleanWordAction(argparse.Action):
    """``--flag [BOOL]``: the original OCNet's boolean flags (``add_flag``).

    On its own argparse would take any word after ``--flag`` as its value (``nargs='?'``);
    ``ArgumentParser.parse_known_args`` rewrites each use first, so that this action always gets
    an explicit value: ``--flag`` -> ``--flag=true``, ``--flag yes`` -> ``--flag=yes``.
    """

    def __init__(self, option_strings: Sequence[str], dest: str, default=False, help=None):
        super().__init__(
            option_strings,
            dest,
            nargs="?",
            const=True,
            default=default,
            type=str2bool,
            metavar="BOOL",
            help=help,
        )

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line like every other user error (no usage block), and
    whose ``add_flag`` booleans take a following word only when it is a boolean word."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see {self.prog} --help)")

    def _get_value(self, action: argparse.Action, arg_string: str):
        """argparse's, but a ``FlagValueError`` of the type ends the parse as
        ``<prog>: error: --flag <why>`` (no usage hint: the line names the flag and its value)."""
        try:
            return super()._get_value(action, arg_string)
        except argparse.ArgumentError as error:
            if isinstance(error.__context__, FlagValueError):
                name = action.option_strings[0] if action.option_strings else action.dest
                fail(self.prog, f"{name} {error.__context__}")
            raise

    def parse_args(self, args=None, namespace=None):
        """argparse's; a word left over right after an ``add_flag`` boolean is reported as the
        value it was probably meant to be (``argument --ohem: expected a boolean ..., got
        'maybe'``), other left-over words as argparse does."""
        words = list(sys.argv[1:] if args is None else args)
        namespace, extras = self.parse_known_args(words, namespace)
        if extras:
            for before, word in zip(words, words[1:]):
                action, option = self._boolean_option(before)
                if action is not None and word == extras[0]:
                    self.error(f"argument {option}: {str2bool_problem(word)}")
            self.error("unrecognized arguments: " + " ".join(extras))
        return namespace

    def parse_known_args(self, args=None, namespace=None):
        """argparse's, after every use of an ``add_flag`` boolean is given an explicit value.

        argparse decides what a ``nargs='?'`` option consumes before any type is applied, and
        cannot look at the next word first; so the words are rewritten here, before it sees them:
        ``--flag WORD`` becomes ``--flag=WORD`` when WORD is a boolean word (``BOOLEAN_WORDS``, any
        case) and ``--flag=true`` followed by ``WORD`` otherwise; ``--flag`` at the end or before
        another option becomes ``--flag=true``. Unique abbreviations are resolved as argparse
        would; ``--flag=VALUE``, ``--no-flag`` (a plain ``store_false``) and the words after
        ``--`` are left as they are. Everything else, errors included, is argparse's.
        """
        words = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self._explicit_booleans(words), namespace)

    def _explicit_booleans(self, words: list[str]) -> list[str]:
        actions = [a for a in self._actions if isinstance(a, BooleanWordAction)]
        if not actions:
            return words
        rewritten: list[str] = []
        index = 0
        while index < len(words):
            word = words[index]
            index += 1
            if word == "--":
                rewritten += words[index - 1 :]
                break
            action, option = self._boolean_option(word)
            if action is None:
                rewritten.append(word)
            elif index < len(words) and is_boolean_word(words[index]):
                rewritten.append(f"{option}={words[index]}")
                index += 1
            else:
                rewritten.append(f"{option}=true")
        return rewritten

    def _boolean_option(self, word: str) -> tuple[BooleanWordAction | None, str]:
        """The ``add_flag`` action ``word`` names (exactly, or as argparse's unique
        abbreviation), with its full option string; ``(None, word)`` for anything else."""
        if not word.startswith("--") or "=" in word:
            return None, word
        options = self._option_string_actions
        if word in options:
            matches = [word]
        elif self.allow_abbrev:
            matches = [option for option in options if option.startswith(word)]
        else:
            matches = []
        if len(matches) == 1 and isinstance(options[matches[0]], BooleanWordAction):
            return options[matches[0]], matches[0]
        return None, word


def add_flag(group: argparse._ActionsContainer, name: str, help: str, default=False) -> None:
    """A boolean of the original's style: ``--flag``, ``--flag True``, ``--flag=no``, and
    ``--no-flag`` (``BooleanWordAction``; needs ``ArgumentParser``)."""
    negative = "--no-" + name.removeprefix("--")
    action = group.add_argument(
        name, action=BooleanWordAction, default=default, help=f"{help} ({negative}: off)"
    )
    # A plain switch of its own, so that its help line does not offer a value it does not take.
    group.add_argument(
        negative,
        dest=action.dest,
        action="store_false",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


def add_switch(group: argparse._ActionsContainer, name: str, help: str, default=False) -> None:
    """A plain switch, ``--name`` / ``--no-name``: it never takes a value."""
    group.add_argument(name, action=argparse.BooleanOptionalAction, default=default, help=help)


# ------------------------------------------------------------------------------------------------
# Flag types: a bad value is one line at parse time, ``<prog>: error: --flag <why>``.


class FlagValueError(argparse.ArgumentTypeError):
    """A bad flag value, said as what is wrong with it: ``must be positive, got 0``,
    ``out/ exists and is not a folder``. ``ArgumentParser`` puts the flag in front
    (``--num-steps must be positive, got 0``), the wording of every other check of the tools."""


def int_at_least(low: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``low``."""
    what = {0: "must not be negative", 1: "must be positive"}.get(low, f"must be at least {low}")

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise FlagValueError(f"must be an integer, got {value!r}") from None
        if number < low:
            raise FlagValueError(f"{what}, got {value}")
        return number

    parse.__name__ = f"int_at_least_{low}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def number_in(
    low: float | None = None, high: float | None = None, low_open=False, high_open=False
) -> Callable[[str], float]:
    """argparse type: a float in the interval given (``None``: unbounded on that side)."""
    if low == 0 and high is None:
        what = "must be positive" if low_open else "must not be negative"
    else:
        left = "(" if low_open or low is None else "["
        right = ")" if high_open or high is None else "]"
        lows = "-inf" if low is None else f"{low:g}"
        highs = "inf" if high is None else f"{high:g}"
        what = f"must lie in {left}{lows}, {highs}{right}"

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise FlagValueError(f"must be a number, got {value!r}") from None
        inside = number == number  # not NaN
        if low is not None:
            inside = inside and (number > low if low_open else number >= low)
        if high is not None:
            inside = inside and (number < high if high_open else number <= high)
        if not inside:
            raise FlagValueError(f"{what}, got {value}")
        return number

    parse.__name__ = "number"
    return parse


positive_float = number_in(0, low_open=True)
non_negative_float = number_in(0)


def image_size(value: str) -> tuple[int, int]:
    """argparse type for ``H,W`` (or a single ``S`` for a square)."""
    parts = value.split(",")
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        sizes = ()
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a size as H,W with positive integers, got {value!r}"
        )
    return sizes


def float_list(value: str) -> list[float]:
    """argparse type for comma-separated floats such as ``0.75,1.0,1.25``."""
    try:
        values = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive numbers, got {value!r}"
        )
    return values


# Paths: the folder to read, and where outputs go (checked, never created, at parse time). Input
# files (checkpoints, lists) are read by the checks before any work, which say more than "is not
# a file" (truncated, not a checkpoint, line 7). ``paths_unchecked`` turns the path checks off,
# for a parse-only look at a command line whose files live elsewhere (a documented example).
_CHECK_PATHS = contextvars.ContextVar("check_paths", default=True)


@contextlib.contextmanager
def paths_unchecked() -> Iterator[None]:
    """Parse without looking at the disk: the path types return their value unchecked."""
    token = _CHECK_PATHS.set(False)
    try:
        yield
    finally:
        _CHECK_PATHS.reset(token)


def existing_folder(value: str) -> str:
    """argparse type: a folder that exists (an input)."""
    if _CHECK_PATHS.get() and not os.path.isdir(value):
        kind = "is a file, not a folder" if os.path.exists(value) else "is not a folder"
        raise FlagValueError(f"{value} {kind}")
    return value


def folder_problem(path: str) -> str:
    """Why the folder ``path`` can neither be used nor created, or "" (nothing is created)."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            return f"{path} exists and is not a folder"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{path} is not writable"
        return ""
    parent = os.path.dirname(os.path.normpath(path)) or "."
    while not os.path.exists(parent):
        parent = os.path.dirname(parent) or "."
    if not os.path.isdir(parent):
        return f"{path} cannot be created: {parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{path} cannot be created: {parent} is not writable"
    return ""


def output_folder(value: str) -> str:
    """argparse type: a folder to write into, existing or to be created (by the tool, later):
    not a file, and it or its nearest existing parent is a writable folder."""
    problem = folder_problem(value) if _CHECK_PATHS.get() else ""
    if problem:
        raise FlagValueError(problem)
    return value


def output_file(value: str) -> str:
    """argparse type: a file to write (replaced if it exists): not a folder, and its folder is
    one ``output_folder`` accepts."""
    if _CHECK_PATHS.get():
        if os.path.isdir(value):
            raise FlagValueError(f"{value} is a folder; give a file name")
        folder = os.path.dirname(os.path.normpath(value)) or "."
        problem = folder_problem(folder)
        if problem:
            raise FlagValueError(f"{value}: {problem}")
    return value
