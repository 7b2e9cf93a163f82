"""Meta-tests: partial user implementations plug in by path; what they lack skips, with a reason."""

from __future__ import annotations

import json

from suite.meta.subprocess_run import ROOT, impl_args, run_pytest

USER_MODELS = ROOT / "suite" / "meta" / "user_models.py"


def conformance(tmp_path, test_file: str, attr: str) -> tuple[dict[str, dict], str]:
    """Run one clause module on `user_models.py:attr` (smoke tier); results by clause, stdout."""
    result = run_pytest(
        test_file,
        *impl_args(f"{USER_MODELS}:{attr}"),
        "--tier",
        "smoke",
        "-p",
        "no:xdist",
        "--report-dir",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "conformance.json").read_text())
    return {r["clause"]: r for r in report["results"]}, result.stdout


def test_parallel_only_linear_attention(tmp_path):
    """Only linear_attention: LIN-REF and LIN-NO-FUTURE pass, the other forms' clauses skip."""
    outcome, _ = conformance(tmp_path, "suite/test_linear.py", "parallel_only")
    assert outcome["LIN-REF"]["outcome"] == "passed"
    assert outcome["LIN-NO-FUTURE"]["outcome"] == "passed"
    for clause_id in ("LIN-FORMS-AGREE", "LIN-SPLIT-RESUME", "LIN-DECODE-EQ-PREFILL"):
        record = outcome[clause_id]
        assert record["outcome"] == "skipped", record
        assert record["message"].startswith("not implemented by parallel-only: "), record
        assert "linear_attention_" in record["message"], record


def test_bring_your_own_model(tmp_path):
    """model() + model_config: the four self-consistency clauses pass, DEC-CROSS-IMPL skips."""
    outcome, _ = conformance(tmp_path, "suite/test_decoder.py", "own_model")
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
