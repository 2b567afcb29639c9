"""The Dockerfile parses and refers only to files that exist (no Docker engine needed)."""

import json
import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INSTRUCTIONS = {
    "FROM",
    "ARG",
    "ENV",
    "WORKDIR",
    "COPY",
    "ADD",
    "RUN",
    "CMD",
    "ENTRYPOINT",
    "LABEL",
    "EXPOSE",
    "USER",
    "VOLUME",
    "SHELL",
    "HEALTHCHECK",
    "STOPSIGNAL",
    "ONBUILD",
}


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """Logical lines of a Dockerfile as (INSTRUCTION, arguments), continuations joined."""
    instructions, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def test_dockerfile_parses_and_references_existing_files():
    instructions = dockerfile_instructions(REPO / "Dockerfile")
    keywords = [k for k, _ in instructions]
    assert set(keywords) <= INSTRUCTIONS, set(keywords) - INSTRUCTIONS
    first = next(k for k in keywords if k != "ARG")
    assert first == "FROM"

    args = dict(a.split("=", 1) for k, a in instructions if k == "ARG" and "=" in a)
    base = next(a for k, a in instructions if k == "FROM")
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    match = re.fullmatch(
        r"pytorch/pytorch:(\d+)\.(\d+)\.\d+-cuda[\d.]+-cudnn\d+-(runtime|devel)", base
    )
    assert match, f"expected an official CUDA PyTorch base image, got {base}"
    assert (int(match.group(1)), int(match.group(2))) >= (2, 10), "torch >= 2.10 (CVE-2025-32434)"

    for keyword, rest in instructions:
        if keyword in ("COPY", "ADD"):
            *sources, _ = shlex.split(rest)
            for source in sources:
                if source != ".":
                    assert (REPO / source).exists(), f"{keyword} source {source} missing"
        if keyword == "CMD":
            command = json.loads(rest)
            assert command[0] in ("sh", "bash", "python")
            assert (REPO / command[1]).is_file(), f"CMD runs {command[1]}, which does not exist"
        if keyword == "RUN" and "-r " in rest:
            requirement = rest.split("-r ", 1)[1].split()[0]
            assert (REPO / requirement).is_file()


def test_dockerignore_keeps_code_and_drops_local_state():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
    for needed in ("train.py", "evaluate.py", "generate_submit.py", "requirements.txt"):
        assert needed not in ignored
