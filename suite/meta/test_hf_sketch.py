"""Meta-test: the Hugging Face wrapper in docs/libraries.md, copied into a file and run as
written, passes the four self-consistency decoder clauses.

It imports transformers in a subprocess (slow), so it runs only in a session that selected
`--impl hf` and named this file (CI's second command does both) and is skipped elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from attnspec.suite.meta.subprocess_run import ROOT, run_pytest
from attnspec.suite.plugin import session_of

DOC = ROOT / "docs" / "libraries.md"
SELF_CONSISTENCY = ("DEC-CACHED-EQ-FULL", "DEC-CHUNKED-PREFILL", "DEC-GREEDY-EQ", "DEC-BATCH-INDEP")


def sketch() -> str:
    """The Python block of docs/libraries.md that starts with `# my_llama.py`."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    found = [b for b in blocks if b.startswith("# my_llama.py")]
    assert len(found) == 1, f"expected one '# my_llama.py' block in {DOC}, found {len(found)}"
    return found[0]


def test_hf_sketch_passes_self_consistency(request, tmp_path):
    """docs/libraries.md's my_llama.py: the four DEC self-consistency clauses pass in both of
    its dtypes, and DEC-CROSS-IMPL is skipped (the model brings its own weights)."""
    session = session_of(request.config)
    impls = [s.name for s in session.subjects] if session is not None else []
    if "hf" not in impls:
        pytest.skip("runs with --impl hf (it imports transformers in a subprocess)")
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed (pip install -e '.[hf]')")
    path = tmp_path / "my_llama.py"
    path.write_text(sketch())
    result = run_pytest(
        "suite/test_decoder.py",
        "--impl",
        str(path),
        "--dtype",
        "float32",
        "--dtype",
        "bfloat16",
        "-p",
        "no:xdist",
        f"--report-dir={tmp_path}",
        "-W",
        "error::FutureWarning",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    records = json.loads((tmp_path / "conformance.json").read_text())["results"]
    outcome = {(r["clause"], r["dtype"]): r for r in records}
    for dtype in ("float32", "bfloat16"):
        for clause_id in SELF_CONSISTENCY:
            assert outcome[(clause_id, dtype)]["outcome"] == "passed", outcome[(clause_id, dtype)]
        cross = outcome[("DEC-CROSS-IMPL", dtype)]
        assert cross["outcome"] == "skipped", cross
        assert "not implemented by my-llama: decoder" in cross["message"], cross
