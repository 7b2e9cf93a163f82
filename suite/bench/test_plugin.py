"""The benchmark path stays alive: every benchmark runs once, untimed, in a plain conformance run.

Each test runs pytest in a subprocess from the repository root and matches its output.
"""

import json
from pathlib import Path

from suite.meta.subprocess_run import ROOT, impl_args
from suite.meta.subprocess_run import run_pytest as run_subprocess


def run_pytest(*args, tmp_path):
    """Run pytest on the shipped implementations in a subprocess; return (exit code, output)."""
    done = run_subprocess(
        "-q",
        *impl_args(),
        *args,
        f"--report-dir={tmp_path}",
        f"--ignore={Path(__file__).relative_to(ROOT)}",
    )
    return done.returncode, done.stdout + done.stderr


def test_benchmarks_run_untimed_and_report(tmp_path):
    """`pytest suite/bench --benchmark-disable --bench-size small` runs and checks every
    benchmark once and writes the roofline Markdown, JSON and PNG."""
    code, out = run_pytest(
        "suite/bench", "--benchmark-disable", "--bench-size", "small", tmp_path=tmp_path
    )
    assert code == 0, out[-4000:]
    assert "attnspec roofline" in out
    for name in ("roofline.md", "roofline.json", "roofline.png"):
        assert f"roofline report: {tmp_path / name}" in out
        assert (tmp_path / name).stat().st_size > 0
    report = json.loads((tmp_path / "roofline.json").read_text())
    groups = {row["group"] for row in report["rows"]}
    assert {"matmul", "decode attention", "kv-cache append"} <= groups
    assert all(row["check"] == "ok" for row in report["rows"])
    assert report["baseline"]["ridge"] > 295


def test_plain_run_skips_benchmarks(tmp_path):
    """Without a benchmark option the benchmarks are skipped with a reason that says how to run them."""
    code, out = run_pytest("suite/bench", "-k", "matmul", "-rs", tmp_path=tmp_path)
    assert code == 0, out[-4000:]
    assert "run with `pytest --benchmark-only`" in out
    assert "attnspec roofline" not in out
