"""A user's implementation at benchmark sizes: every benchmark runs once, untimed, and its
output is checked against the float64 reference, in a plain `pytest suite --impl ...`.

Conformance examples are drawn small and large; benchmarks reach further still (16k-token
caches, 4096-wide matmuls). A plain run without --impl gets this from the self-test
suite/bench/test_plugin.py; the smoke tier leaves it out (it takes several seconds).
"""

from pathlib import Path

import pytest

from attnspec.suite.bench.test_plugin import check_report, run_pytest
from attnspec.suite.plugin import session_of


def locators(config) -> list[str]:
    """The --impl values of this run, paths made absolute (the subprocess runs from the root)."""
    session = session_of(config)
    found = []
    for subject in session.subjects if session is not None else []:
        path = Path(subject.locator.split(":", 1)[0])
        rest = subject.locator[len(str(path)) :]
        found.append(str(path.resolve()) + rest if path.exists() else subject.locator)
    return found


def test_outputs_at_benchmark_sizes(request, tmp_path):
    """Every benchmark of the implementations under test runs once and matches the reference."""
    session = session_of(request.config)
    if session is None or not session.named:
        pytest.skip("without --impl, suite/bench/test_plugin.py checks the shipped implementations")
    if session.tier == "smoke":
        pytest.skip("benchmark-size checks run at the default and thorough tiers")
    under_test = locators(request.config)
    code, out = run_pytest(
        "suite/bench",
        "--benchmark-disable",
        "--bench-size",
        "small",
        "--device",
        session.device,
        tmp_path=tmp_path,
        locators=under_test,
    )
    assert code == 0, out[-4000:]
    check_report(tmp_path, under_test)
