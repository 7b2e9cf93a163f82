"""Meta-tests: partial user implementations plug in by path; what they lack skips, with a reason."""

from __future__ import annotations

import json

from attnspec.suite.meta import background
from attnspec.suite.meta.subprocess_run import ROOT, impl_args

USER_MODELS = ROOT / "suite" / "meta" / "user_models.py"


def clause_run(test_file: str, attr: str) -> str:
    """Register a run of one clause module on `user_models.py:attr` (smoke tier)."""
    return background.register(
        f"user-model-{attr}",
        lambda folder: [
            test_file,
            *impl_args(f"{USER_MODELS}:{attr}"),
            "--tier",
            "smoke",
            "-p",
            "no:xdist",
            "--report-dir",
            str(folder),
        ],
    )


PARALLEL_ONLY = clause_run("suite/test_linear.py", "parallel_only")
OWN_MODEL = clause_run("suite/test_decoder.py", "own_model")


def conformance(run: str) -> tuple[dict[str, dict], str]:
    """The run's results by clause, and its stdout."""
    result = background.result(run)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    report = json.loads((result.folder / "conformance.json").read_text())
    return {r["clause"]: r for r in report["results"]}, result.stdout


def test_parallel_only_linear_attention():
    """Only linear_attention: LIN-REF and LIN-NO-FUTURE pass, the other forms' clauses skip."""
    outcome, _ = conformance(PARALLEL_ONLY)
    assert outcome["LIN-REF"]["outcome"] == "passed"
    assert outcome["LIN-NO-FUTURE"]["outcome"] == "passed"
    for clause_id in ("LIN-FORMS-AGREE", "LIN-SPLIT-RESUME", "LIN-DECODE-EQ-PREFILL"):
        record = outcome[clause_id]
        assert record["outcome"] == "skipped", record
        assert record["message"].startswith("not implemented by parallel-only: "), record
        assert "linear_attention_" in record["message"], record


def test_bring_your_own_model():
    """model() + model_config: the four self-consistency clauses pass, DEC-CROSS-IMPL skips."""
    outcome, _ = conformance(OWN_MODEL)
    for clause_id in (
        "DEC-CACHED-EQ-FULL",
        "DEC-CHUNKED-PREFILL",
        "DEC-GREEDY-EQ",
        "DEC-BATCH-INDEP",
    ):
        assert outcome[clause_id]["outcome"] == "passed", outcome[clause_id]
    cross = outcome["DEC-CROSS-IMPL"]
    assert cross["outcome"] == "skipped", cross
    assert "not implemented by own-model: decoder" in cross["message"], cross
