"""Meta-tests: a user's implementation plugs in by path, and missing ops become skips."""

from __future__ import annotations

import importlib.util
import json

import pytest

from attnspec.suite.meta import background
from attnspec.suite.meta.subprocess_run import ROOT

EXAMPLE = ROOT / "implementations" / "examples" / "naive_attention.py"
HAS_TORCH = importlib.util.find_spec("torch") is not None
EXAMPLE_RUN = background.register(
    "worked-example",
    lambda folder: [
        "suite/test_attention.py",
        "suite/test_kv_cache.py",
        "--impl",
        str(EXAMPLE),
        "--tier",
        "smoke",
        "--report-dir",
        str(folder),
    ],
    enabled=HAS_TORCH,
)


def test_attention_only_implementation_runs():
    """The README's worked example passes the attention clauses in its first half-precision
    dtype (the smoke tier's choice among those it declares); KV clauses skip, naming it."""
    pytest.importorskip("torch", reason="torch is not installed: the worked example is in torch")
    result = background.result(EXAMPLE_RUN)
    assert result.returncode == 0, result.stdout[-3000:]
    report = json.loads((result.folder / "conformance.json").read_text())
    outcome = {r["clause"]: r for r in report["results"]}
    assert outcome["ATTN-REF"]["outcome"] == "passed"
    assert outcome["KV-DECODE-EQ-RECOMPUTE"]["outcome"] == "skipped"
    assert "not implemented by naive-torch: kv_cache" in outcome["KV-BYTES"]["message"]
    assert report["checked_in"] == {"naive-torch": ["float16"]}
    assert "skip x5  naive-torch [float16]: not implemented by naive-torch" in result.stdout
