"""``python -m bench`` keeps measured numbers: a partial run updates its own sections of the
results file, and a ``--quick`` smoke run writes nothing unless told where."""

from __future__ import annotations

import types

import bench.__main__ as bench_main

OLD = """Machine: AMD EPYC, 2 cores visible; torch 2.13.0+cpu

Mode: full

### attention (380 s)

| case | ms |
|---|---|
| base | 12.5 |

### gpu (3 s)

stale
"""


def fake_benchmarks(monkeypatch, table: str):
    """Every benchmark returns ``table`` (a benchmark may return its own markdown)."""
    module = types.SimpleNamespace(run=lambda quick: table)
    monkeypatch.setattr(
        bench_main, "importlib", types.SimpleNamespace(import_module=lambda n: module)
    )


def test_a_partial_run_replaces_only_its_section(tmp_path, monkeypatch):
    out = tmp_path / "results.md"
    out.write_text(OLD)
    fake_benchmarks(monkeypatch, "| model | ms |\n|---|---|\n| m | 7.25 |")
    args = bench_main.get_args_parser().parse_args(["--only", "gpu", "--out", str(out)])
    assert bench_main.main(args) == 0
    head, sections = bench_main.split_sections(out.read_text())
    assert list(sections) == ["attention", "gpu"]
    # The old section is kept word for word, now naming the machine it was measured on.
    assert sections["attention"].splitlines() == [
        "### attention (380 s)",
        "",
        "Machine: AMD EPYC, 2 cores visible; torch 2.13.0+cpu",
        "",
        "| case | ms |",
        "|---|---|",
        "| base | 12.5 |",
    ]
    gpu = sections["gpu"]
    assert "stale" not in gpu and "| m | 7.25 |" in gpu
    assert f"Machine: {bench_main.machine_description()}. Mode: full." in gpu


def test_a_quick_run_writes_nothing_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench").mkdir()
    fake_benchmarks(monkeypatch, "| model | ms |\n|---|---|\n| m | 1.0 |")
    assert (
        bench_main.main(bench_main.get_args_parser().parse_args(["--only", "gpu", "--quick"])) == 0
    )
    assert list((tmp_path / "bench").iterdir()) == []
    assert "wrote" not in capsys.readouterr().out
    # A full run writes the default file.
    assert bench_main.main(bench_main.get_args_parser().parse_args(["--only", "gpu"])) == 0
    assert list(bench_main.split_sections((tmp_path / bench_main.RESULTS).read_text())[1]) == [
        "gpu"
    ]
