"""The documentation cannot drift from the code: its commands parse and its links lead somewhere.

Every ``sh``, ``bash``, ``shell`` and ``console`` code block of README.md and docs/*.md is read as
shell: backslash continuations joined, comments dropped, split at ``&&``, ``||``, ``;`` and ``|``.
A command of this project is found in each piece after its leading ``NAME=value`` assignments and
any launcher before it (``srun``, ``docker run ... IMAGE``):

- ``python[3] X.py ...`` (also ``.venv/bin/python``): the script exists, and when it is one of the
  tools its own parser (taken from the tool as ``tests/test_cli.py`` does) accepts the words;
- ``python[3] -m pkg.mod ...`` for a package of this repository: the module is an entry point,
  and its parser accepts the words;
- ``torchrun [its options] X.py ...``: as ``python X.py`` with the words after the script;
- ``sh|bash X.sh ...`` and ``sbatch [its options] X.sh``: the script exists (what the run
  scripts pass is tested elsewhere).

Parsing is all that happens, inside ``paths_unchecked()`` because some flags check at parse time
that a folder exists: placeholders such as ``DIR``, ``FILE`` or ``<tag>`` are fine. A bare ``...``
stands for flags left out and is dropped. An unknown or misspelt flag, a bad value or a missing
required flag fails with the doc file, its line and the command.

Every relative link and image, ``[text](path)`` or ``![text](path)`` with an optional
``#anchor``, points to a file that exists, and an anchor into a markdown file to one of its
headings.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.cli import paths_unchecked
from tests.test_cli import PARSERS, entry_points

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"^(\s*)```\s*(sh|bash|shell|console)\s*$")
FENCE = re.compile(r"^\s*```")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PYTHON = {"python", "python3"}
# The packages of this repository (a folder with Python files at the top).
PACKAGES = {p.parent.name for p in REPO.glob("*/*.py") if not p.parent.name.startswith(".")}


def relative(path: Path) -> str:
    return str(path.relative_to(REPO))


@dataclass
class Command:
    doc: str  # e.g. "docs/training.md"
    line: int  # line of the doc where the command starts
    text: str  # the command as the doc writes it (continuations joined)
    words: list[str]  # the command's words, from the program on


def shell_lines(path: Path):
    """``(line number, logical line)`` of every shell code block of ``path``: continuations joined,
    a console block's prompts ``$ `` removed (its other lines are output)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = SHELL_BLOCK.match(lines[index])
        index += 1
        if not match:
            if FENCE.match(lines[index - 1]):  # skip any other block, its fences included
                while index < len(lines) and not FENCE.match(lines[index]):
                    index += 1
                index += 1
            continue
        console = match.group(2) == "console"
        start, pending = None, ""
        while index < len(lines) and not FENCE.match(lines[index]):
            text = lines[index].strip()
            index += 1
            if console and not pending:
                if not text.startswith("$ "):
                    continue
                text = text[2:]
            if start is None:
                start = index
            if text.endswith("\\"):
                pending += text[:-1].rstrip() + " "
                continue
            yield start, pending + text
            start, pending = None, ""
        if pending:
            yield start, pending
        index += 1


def pieces(text: str) -> list[list[str]]:
    """The words of each command of a shell line, split at ``&&``, ``||``, ``;`` and ``|``."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    result, current = [], []
    for word in lexer:
        if word and set(word) <= set(";&|"):
            result.append(current)
            current = []
        else:
            current.append(word)
    result.append(current)
    return [words for words in result if words]


def program(word: str) -> str:
    return word.removeprefix(".venv/bin/")


def project_words(words: list[str]) -> list[str] | None:
    """The words from the project's program on (``python``, ``torchrun``, ``sh``), or None."""
    while words and ASSIGNMENT.match(words[0]):
        words = words[1:]
    for position, word in enumerate(words):
        name = program(word)
        if name in PYTHON or name in ("torchrun", "sh", "bash", "sbatch"):
            rest = words[position + 1 :]
            if name in PYTHON and rest and rest[0] == "-m":
                package = rest[1].split(".")[0] if len(rest) > 1 else ""
                return [name, *rest] if package in PACKAGES else None
            if name in PYTHON and rest and rest[0].endswith(".py"):
                return [name, *rest]
            if name == "torchrun" and any(w.endswith(".py") for w in rest):
                return [name, *rest]
            if name in ("sh", "bash") and rest and rest[0].endswith(".sh"):
                return [name, *rest]
            if name == "sbatch" and any(w.endswith(".sh") for w in rest):
                return [name, *rest]
            return None
    return None


def documented_commands() -> list[Command]:
    commands = []
    for path in DOCS:
        for line, text in shell_lines(path):
            for words in pieces(text):
                found = project_words(words)
                if found:
                    commands.append(Command(relative(path), line, text, found))
    return commands


COMMANDS = documented_commands()


def command_id(command: Command) -> str:
    return f"{command.doc}:{command.line}:{' '.join(command.words[:3])}"


def tool_and_arguments(words: list[str]) -> tuple[str, list[str]]:
    """``(tool name as tests/test_cli.py spells it, the words it parses)``; the tool of a script
    is its path (``bench/gpu_check.sh``, ``train.py``)."""
    name, rest = program(words[0]), words[1:]
    if name in ("torchrun", "sbatch"):
        script = ".py" if name == "torchrun" else ".sh"
        position = next(i for i, w in enumerate(rest) if w.endswith(script))
        rest = rest[position:]
    elif name in PYTHON and rest[0] == "-m":
        return f"python -m {rest[1]}", rest[2:]
    return rest[0], rest[1:]


@pytest.mark.parametrize("command", COMMANDS, ids=command_id)
def test_documented_command_parses(command: Command):
    tool, arguments = tool_and_arguments(command.words)
    where = f"{command.doc}:{command.line}: {command.text}"
    if tool.startswith("python -m "):
        assert tool in entry_points(), f"{where}\n  no module {tool.removeprefix('python -m ')}"
    else:
        assert (REPO / tool).is_file(), f"{where}\n  no file {tool}"
    if tool not in PARSERS:
        assert tool.endswith(".sh") or tool.startswith("python -m "), (
            f"{where}\n  {tool} is not a command-line tool of this repository"
        )
        return
    arguments = [word for word in arguments if word != "..."]
    stderr, status = io.StringIO(), 0
    try:
        with paths_unchecked(), contextlib.redirect_stderr(stderr):
            PARSERS[tool].parse_args(arguments)
    except SystemExit as exit_info:
        status = exit_info.code
    if status:  # outside the except block, so that the message is all the report shows
        pytest.fail(f"{where}\n  {stderr.getvalue().strip()}", pytrace=False)


def test_the_docs_hold_commands_of_every_kind():
    """The reader above finds what the docs hold: every tool and run script is shown somewhere."""
    found = {tool_and_arguments(c.words)[0] for c in COMMANDS}
    assert set(PARSERS) - {"python -m utils.curve"} <= found, set(PARSERS) - found
    assert {"run_demo.sh", "run_asp_oc.sh", "run_slurm.sh", "bench/gpu_check.sh"} <= found
    assert any(program(c.words[0]) == "torchrun" for c in COMMANDS)


def test_the_reader_splits_shell_lines():
    assert pieces("A=1 python train.py --x 1 && sh run_demo.sh | tee log; echo '#' # note") == [
        ["A=1", "python", "train.py", "--x", "1"],
        ["sh", "run_demo.sh"],
        ["tee", "log"],
        ["echo", "#"],
    ]
    assert project_words(["srun", "python", "train.py", "--resume"]) == [
        "python", "train.py", "--resume",
    ]  # fmt: skip
    assert project_words([".venv/bin/python", "-m", "pytest", "-q"]) is None
    assert project_words(["python3", "-m", "venv", ".venv"]) is None
    assert project_words(["FOO=1", ".venv/bin/python", "-m", "bench"]) == [
        "python", "-m", "bench",
    ]  # fmt: skip
    assert tool_and_arguments(["torchrun", "--nnodes", "2", "train.py", "--gpu", "0"]) == (
        "train.py", ["--gpu", "0"],
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Links

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`[^`]*`")


def anchor_of(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but ``-`` and ``_`` dropped,
    spaces to ``-``."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, counts, in_code = set(), {}, False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            heading = re.sub(r"^#+\s*", "", line)
            anchor = anchor_of(heading)
            n = counts.get(anchor, 0)
            found.add(anchor if n == 0 else f"{anchor}-{n}")
            counts[anchor] = n + 1
    return found


def links() -> list[tuple[str, int, str]]:
    found = []
    for path in DOCS:
        in_code = False
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if FENCE.match(line):
                in_code = not in_code
                continue
            if in_code:
                continue
            for match in LINK.finditer(INLINE_CODE.sub("", line)):
                target = match.group(1)
                if not re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                    found.append((relative(path), number, target))
    return found


LINKS = links()


def test_the_docs_have_links():
    assert len(LINKS) > 20 and any(t.endswith(".png") for _, _, t in LINKS)


@pytest.mark.parametrize(
    ("doc", "line", "target"), LINKS, ids=[f"{d}:{n}:{t}" for d, n, t in LINKS]
)
def test_relative_link_points_to_a_file(doc, line, target):
    path, _, anchor = target.partition("#")
    source = REPO / doc
    destination = (source.parent / path).resolve() if path else source
    assert destination.exists(), f"{doc}:{line}: {target}: no such file {relative(destination)}"
    if anchor and destination.suffix == ".md":
        assert anchor in anchors(destination), (
            f"{doc}:{line}: {target}: {relative(destination)} has no heading #{anchor}"
        )
