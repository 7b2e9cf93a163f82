"""Meta-tests: a failing clause's replay script (no pytest, no Hypothesis in it) reproduces the
failure's error figure exactly."""

from __future__ import annotations

import contextlib
import io
import re
import runpy

import numpy as np
import pytest

from attnspec.reports import replay
from attnspec.specs.clauses import ClauseFailure
from attnspec.specs.profiles import KILL
from attnspec.specs.runner import run_clause
from attnspec.suite.meta.mutants import all_mutants
from attnspec.suite.meta.replay_subjects import locator

# A single-call clause; a multi-call one whose failing call reads the cache's contents; and a
# model built from drawn weights, whose forward the script compares with the reference decoder.
CASES = [
    ("ATTN-REF", "scale-1-over-d"),
    ("KV-DECODE-EQ-RECOMPUTE", "overwrite-last-slot"),
    ("DEC-CROSS-IMPL", "interleaved-rope"),
]
ERROR = re.compile(r"normwise relative error (\S+) against the float64 reference")


@pytest.fixture(scope="module")
def replays(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[float, str]]:
    """(the clause's error, what its replay script printed) for each case.

    The scripts run in this interpreter (runpy), to stay within the suite's time budget;
    a fresh one gives the same output (docs/conformance.md shows one).
    """
    mutants = {m.name: m for m in all_mutants()}
    found = []
    for clause_id, name in CASES:
        with pytest.raises(ClauseFailure) as failure:
            run_clause(clause_id, mutants[name].impl, settings_=KILL, locator=locator(name))
        written = replay.write(
            failure.value.attnspec_trace,  # type: ignore[attr-defined]
            tmp_path_factory.mktemp("failures"),
            clause=clause_id,
            impl=mutants[name].impl,
            locator=locator(name),
            dtype="float32",
            device="cpu",
        )
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(written.script), run_name="__main__")
        found.append((failure.value.details["error"], out.getvalue()))
    return found


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{c}<-{m}" for c, m in CASES])
def test_replay_reports_the_clause_error(replays, case):
    """The replay script prints the same normwise error as the clause that failed."""
    error, output = replays[case]
    found = ERROR.search(output)
    assert found, output
    assert found.group(1) == f"{error:.6g}", output


def test_shape_uses_the_contract_letters():
    """The failing call's shape is written in the contract's letters; Dv only when it differs."""
    q, k = np.zeros((2, 4, 3, 8)), np.zeros((2, 2, 5, 8))
    assert replay.shape_text("attention", [q, k, k]) == "B=2 Hq=4 Hkv=2 Tq=3 Tk=5 D=8"
    v = np.zeros((2, 2, 5, 16))
    assert replay.shape_text("attention", [q, k, v]).endswith("D=8 Dv=16")
    assert replay.shape_text("kv_cache", [1, 2, 64, 9, "float32"]) == "B=1 Hkv=2 D=64 max_len=9"
