"""Run every benchmark and write one markdown table: ``python -m bench [--quick] [--out FILE]``.

``--device`` reaches the benchmarks that take one (``gpu``); the others measure the CPU. The exit
status is 1 when any benchmark (or any row of one) failed; the table still holds the others.

``--out`` (default ``bench/results.md``, the measured numbers the docs quote) keeps the sections of
benchmarks that did not run, so ``--only gpu`` adds the GPU's section beside the CPU's. A
``--quick`` run is a smoke run: it prints and writes nothing unless ``--out`` is given, so it never
replaces measured numbers with small-size ones.

Each row is ours vs. a reference measured in the same run on this machine; the header records the
machine so numbers are never quoted without it.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import platform
import time
import traceback
from pathlib import Path

import torch

from bench.common import markdown_table
from engine.cli import RUN_STATUS, ArgumentParser, add_switch, fail, output_file, positive_int
from utils.fileio import atomic_write

BENCHMARKS = (
    "attention",
    "inplace_abn_memory",
    "context_cost",
    "data_pipeline",
    "eval_speed",
    "train_step_memory",
    "whole_frame",
    "gpu",
)
RESULTS = "bench/results.md"
PROG = "python -m bench"


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores visible, torch {torch.get_num_threads()} threads, "
        f"{gpu}; Python {platform.python_version()}, torch {torch.__version__}"
    )


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    add_switch(parser, "--quick", "smaller sizes, for a smoke run")
    # The default leaves out gpu: it needs a GPU to mean anything (python -m bench --only gpu).
    parser.add_argument(
        "--only", nargs="+", choices=BENCHMARKS, default=[b for b in BENCHMARKS if b != "gpu"]
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="device of the benchmarks that take one (gpu): auto (cuda if available), cpu, cuda",
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=None,
        help="timed repeats per case of the benchmarks that take it (gpu), after one warm-up",
    )
    parser.add_argument(
        "--out",
        default=None,
        type=output_file,
        help=f"markdown file to write or update (default {RESULTS}; --quick: none)",
    )
    return parser


def split_sections(text: str) -> tuple[list[str], dict[str, str]]:
    """A results file as its head (lines before the first ``### name``) and its sections by name.

    A section written before sections named their machine gets the head's ``Machine:`` line.
    """
    head, sections, name = [], {}, None
    for line in text.splitlines():
        if line.startswith("### "):
            name = line[4:].split(" (")[0].strip()
            sections[name] = [line]
        elif name is None:
            head.append(line)
        else:
            sections[name].append(line)
    machine = next((line for line in head if line.startswith("Machine:")), None)
    merged = {}
    for key, lines in sections.items():
        body = "\n".join(lines).strip()
        if machine and "\nMachine:" not in body:
            title, _, rest = body.partition("\n")
            body = f"{title}\n\n{machine}\n{rest}"
        merged[key] = body
    return head, merged


def write_results(path: str, sections: dict[str, str]) -> None:
    """Write ``sections`` into ``path``, keeping its sections of benchmarks not run now (in
    ``BENCHMARKS`` order; unknown names after them)."""
    kept: dict[str, str] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            kept = split_sections(handle.read())[1]
    kept.update(sections)
    order = [n for n in BENCHMARKS if n in kept] + [n for n in kept if n not in BENCHMARKS]
    head = "Benchmarks, one section per benchmark; each names the machine and mode it ran in."
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write(path, ("\n\n".join([head, *(kept[n] for n in order)]) + "\n").encode())


def main(args: argparse.Namespace) -> int:
    """Runs the benchmarks, writes ``--out``; returns the number that failed."""
    failed = 0
    machine = f"Machine: {machine_description()}. Mode: {'quick' if args.quick else 'full'}."
    sections: dict[str, str] = {}
    for name in args.only:
        started = time.perf_counter()
        print(f"==> bench.{name}", flush=True)
        try:
            benchmark = importlib.import_module(f"bench.{name}").run
            options = {"quick": args.quick}
            accepted = inspect.signature(benchmark).parameters
            if "device" in accepted:
                options["device"] = args.device
            if "repeats" in accepted and args.repeats is not None:
                options["repeats"] = args.repeats
            result = benchmark(**options)
            # A benchmark returns table rows, or a markdown table of its own shape.
            body = result if isinstance(result, str) else markdown_table(result)
        except Exception as error:  # one broken benchmark must not hide the others' numbers
            failed += 1
            # A benchmark whose rows failed one by one carries the table of the others.
            body = (
                getattr(error, "table", None) or f"FAILED:\n```\n{traceback.format_exc(limit=3)}```"
            )
        elapsed = time.perf_counter() - started
        print(body, flush=True)
        sections[name] = f"### {name} ({elapsed:.0f} s)\n\n{machine}\n\n{body}"
    out = args.out if args.out is not None or args.quick else RESULTS
    if out is not None:
        try:
            write_results(out, sections)
        except OSError as error:
            fail(PROG, f"cannot write {out}: {error.strerror or error}", RUN_STATUS)
        print(f"wrote {out}")
    return failed


if __name__ == "__main__":
    raise SystemExit(1 if main(get_args_parser().parse_args()) else 0)
