"""Meta-tests: the plugin loads once (entry point or conftest), leaves the self-tests out when
--impl names implementations, and keeps Hypothesis's report out of the summary."""

from __future__ import annotations

from attnspec.implementations.discovery import UnderTest, under_test
from attnspec.reports.conformance import failure_message
from attnspec.suite.meta import background

GROUP = "attnspec conformance and benchmarks:"
HELP_RUNS = [
    background.register(f"help{i}", lambda folder, e=extra: ["--help", *e], timeout=60)
    for i, extra in enumerate(([], ["-p", "no:attnspec"]))
]
COLLECT_RUN = background.register(
    "impl-collect", lambda folder: ["suite", "--impl", "numpy", "--collect-only", "-q"], timeout=120
)


def test_help_shows_the_group_once_with_or_without_the_entry_point():
    """`pytest --help` shows the attnspec options once, whether the installed entry point or
    the checkout's conftest.py registers the plugin (it is never registered twice)."""
    for run in HELP_RUNS:
        result = background.result(run)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert result.stdout.count(GROUP) == 1 and "--self-test" in result.stdout, run


def test_impl_leaves_self_tests_out_with_one_line():
    """With --impl the suite's own tests are not collected, and one line says how to add them."""
    result = background.result(COLLECT_RUN)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "suite/meta/" not in result.stdout and "suite/test_tiled.py" in result.stdout
    assert "add --self-test to run them too" in result.stdout


def test_under_test_stands_in_for_its_implementation():
    """An UnderTest keeps the locator it was loaded from and reads the rest from the object."""
    subject = under_test(" numpy ")
    assert isinstance(subject, UnderTest) and subject.locator == "numpy"
    assert subject.name == "numpy" and subject.attention is subject.impl.attention


def test_summary_message_drops_hypothesis_report():
    """The summary keeps the clause's own message and our notes, not Hypothesis's case block."""
    longrepr = "\n".join(
        [
            "E   attnspec.specs.clauses.ClauseFailure: non-finite output nan",
            "E     in attention(q(1, 1, 1, 1)) on x [float32]",
            "E   Failing test case: ATTN_REF__x__float32(",
            "E       data=data(...),",
            "E   )",
            "E   # The test always failed when commented parts were varied together.",
            "E   You can reproduce this test case by adding @reproduce_failure('6', b'AA==')",
            "E   clause ATTN-REF: attention equals the reference",
        ]
    )
    assert failure_message(longrepr).splitlines() == [
        "non-finite output nan",
        "in attention(q(1, 1, 1, 1)) on x [float32]",
        "clause ATTN-REF: attention equals the reference",
    ]
