"""The benchmark path stays alive: every benchmark runs once, untimed, in a plain conformance run.

Each test runs pytest in a subprocess from the repository root and matches its output. The
subprocess tests the implementations under test in this run (a user's --impl included), so
its outputs at benchmark sizes are checked against the reference in every plain `pytest suite`.
"""

import json
from pathlib import Path

from suite import harness
from suite.meta.subprocess_run import ROOT, SHIPPED, impl_args
from suite.meta.subprocess_run import run_pytest as run_subprocess


def under_test() -> list[str]:
    """The --impl values of this run (paths made absolute: the subprocess runs from the root)."""
    specs = []
    for spec in harness.SPECS.values() or SHIPPED:
        path = Path(spec.split(":", 1)[0])
        specs.append(str(path.resolve()) + spec[len(str(path)) :] if path.exists() else spec)
    return specs


def run_pytest(*args, tmp_path):
    """Run pytest on this run's implementations in a subprocess; return (exit code, output)."""
    done = run_subprocess(
        "-q",
        *impl_args(*under_test()),
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
    if set(under_test()) <= set(SHIPPED):  # a user's implementation may lack some ops
        assert {"matmul", "decode attention", "kv-cache append"} <= groups
    assert report["rows"], "no benchmark ran for the implementations under test"
    assert all(row["check"] == "ok" for row in report["rows"])
    assert report["baseline"]["ridge"] > 295


def test_plain_run_skips_benchmarks(tmp_path):
    """Without a benchmark option the benchmarks are skipped with a reason that says how to run them."""
    code, out = run_pytest("suite/bench", "-k", "matmul", "-rs", tmp_path=tmp_path)
    assert code == 0, out[-4000:]
    assert "run with `pytest --benchmark-only`" in out
    assert "attnspec roofline" not in out
