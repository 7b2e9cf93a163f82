"""The benchmark path stays alive: every benchmark runs once, untimed, in a plain conformance run.

Each test runs pytest in a subprocess from the repository root and matches its output. These
are self-tests on the shipped implementations; a user's --impl gets the same benchmark-size
checks from suite/bench/test_bench_sizes.py.
"""

import json
from pathlib import Path

from attnspec.suite.meta import background
from attnspec.suite.meta.subprocess_run import ROOT, SHIPPED, impl_args
from attnspec.suite.meta.subprocess_run import run_pytest as run_subprocess


def bench_args(*args, folder, locators=SHIPPED) -> list[str]:
    """pytest arguments running suite/bench's benchmarks (not these tests) on `locators`."""
    return [
        "-q",
        *impl_args(*locators),
        *args,
        f"--report-dir={folder}",
        f"--ignore={Path(__file__).relative_to(ROOT)}",
        "--ignore=suite/bench/test_bench_sizes.py",
    ]


def run_pytest(*args, tmp_path, locators=SHIPPED):
    """Run pytest on `locators` in a subprocess; return (exit code, output)."""
    done = run_subprocess(*bench_args(*args, folder=tmp_path, locators=locators))
    return done.returncode, done.stdout + done.stderr


UNTIMED = background.register(
    "bench-untimed",
    lambda folder: bench_args(
        "suite/bench", "--benchmark-disable", "--bench-size", "small", folder=folder
    ),
)
PLAIN = background.register(
    "bench-plain", lambda folder: bench_args("suite/bench", "-k", "matmul", "-rs", folder=folder)
)


def check_report(tmp_path, locators):
    """The roofline report of a run of every benchmark at the small size: written, all ok."""
    for name in ("roofline.md", "roofline.json", "roofline.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    report = json.loads((tmp_path / "roofline.json").read_text())
    groups = {row["group"] for row in report["rows"]}
    if set(locators) <= set(SHIPPED):  # a user's implementation may lack some ops
        assert {"matmul", "decode attention", "kv-cache append"} <= groups
    assert report["rows"], "no benchmark ran for the implementations under test"
    failed = [f"{r['impl']} {r['group']} {r['case']}: {r['check']}" for r in report["rows"]]
    assert all(row["check"] == "ok" for row in report["rows"]), failed
    assert report["baseline"]["ridge"] > 295


def test_benchmarks_run_untimed_and_report():
    """`pytest suite/bench --benchmark-disable --bench-size small` runs and checks every
    benchmark once and writes the roofline Markdown, JSON and PNG."""
    done = background.result(UNTIMED)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "attnspec roofline" in out
    for name in ("roofline.md", "roofline.json", "roofline.png"):
        assert f"roofline report: {done.folder / name}" in out
    check_report(done.folder, SHIPPED)


def test_plain_run_skips_benchmarks():
    """Without a benchmark option the benchmarks are skipped with a reason that says how to run them."""
    done = background.result(PLAIN)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "run with `pytest --benchmark-only`" in out
    assert "attnspec roofline" not in out
