"""Meta-tests of the `vllm-cpu` adapter (implementations/vllm_cpu_impl.py): where vLLM's CPU
build is installed, its kernels pass a few clauses inside the declared limits and the finding in
docs/libraries.md reproduces; elsewhere those tests are skipped with the adapter's own reason.
The checks that need no vllm always run: the adapter never imports vllm, and a missing vllm
is a one-line reason.
"""

from __future__ import annotations

import ast
import importlib.util

import numpy as np
import pytest
from hypothesis import settings

from attnspec.implementations.discovery import LIBRARIES, SHIPPED
from attnspec.specs.clauses import ClauseFailure
from attnspec.specs.profiles import KILL
from attnspec.specs.runner import run_clause
from attnspec.suite.meta.subprocess_run import ROOT

FEW = settings(KILL, max_examples=4)


@pytest.fixture(scope="module")
def vllm_cpu_impl():
    """The adapter module, imported at run time (it is torch code: skipped without torch)."""
    pytest.importorskip("torch", reason="torch is not installed: the vllm-cpu adapter needs it")
    from attnspec.implementations import vllm_cpu_impl

    return vllm_cpu_impl


@pytest.fixture(scope="module")
def vllm(vllm_cpu_impl):
    """The adapter, skipped with its one-line reason where vLLM's CPU kernels cannot run."""
    try:
        vllm_cpu_impl.kernels()
    except vllm_cpu_impl.Unavailable as exc:
        pytest.skip(f"vllm-cpu: {exc}")
    return vllm_cpu_impl.VllmCpu("cpu")


@pytest.mark.parametrize("clause_id", ["PAGED-WRITE-SLOTS", "PAGED-EQ-DENSE", "VARLEN-EQ-PER-SEQ"])
def test_vllm_cpu_passes_inside_its_limits(vllm, clause_id):
    """vLLM's write, paged and varlen kernels pass their clauses in float32 and bfloat16 on
    draws moved inside the adapter's declared block sizes and head dims."""
    for dtype in ("float32", "bfloat16"):
        run_clause(clause_id, vllm, dtype=dtype, settings_=FEW)


def test_vllm_cpu_nan_past_seq_len_reaches_output(vllm):
    """The finding of docs/libraries.md: NaN in the value slots past seq_len of the last block
    reaches vLLM's paged attention output (vllm-cpu 0.32.0), and PAGED-IGNORES-UNOWNED fails."""
    cache = vllm.paged_kv_cache(1, 16, 1, 64, "float32")
    rng = np.random.default_rng(0)
    k, v = rng.standard_normal((2, 16, 1, 64))  # (T=16, Hkv=1, D=64) each
    v[1:] = np.nan  # only token 0 is the sequence's: slots 1..15 lie past seq_len = 1
    vllm.paged_kv_write(cache, vllm.asarray(k, "float32"), vllm.asarray(v, "float32"),
                        vllm.asarray(np.arange(16), "int32"))  # fmt: skip
    index = {
        name: vllm.asarray(np.array(x), "int32")
        for name, x in (("block_table", [[0]]), ("seq_lens", [1]), ("cu_seqlens_q", [0, 1]))
    }
    q = vllm.asarray(rng.standard_normal((1, 1, 64)), "float32")  # (total_q, Hq, D)
    out = vllm.to_numpy(vllm.paged_attention(q, cache, causal=True, **index))
    assert np.isnan(out).all(), f"vLLM ignored the NaN past seq_len: {out.ravel()[:4]} (fixed?)"
    with pytest.raises(ClauseFailure, match="NaN"):
        run_clause("PAGED-IGNORES-UNOWNED", vllm, dtype="float32", settings_=FEW)


def test_vllm_cpu_pages_are_views_where_the_layout_is_strided(vllm):
    """On the vec16 kernel (block size 16) k_pages and v_pages are zero-copy views of vLLM's
    cache, so what the clauses read is what the kernel reads."""
    cache = vllm.paged_kv_cache(3, 16, 2, 64, "float32")
    assert cache.isa == "vec16"
    assert cache.k_pages.untyped_storage().data_ptr() == cache.kv.untyped_storage().data_ptr()
    assert cache.v_pages.untyped_storage().data_ptr() == cache.kv.untyped_storage().data_ptr()


def test_vllm_cpu_missing_vllm_is_one_line(vllm_cpu_impl, monkeypatch):
    """Without vllm installed the adapter's kernels raise Unavailable with a one-line reason
    that says how to install it."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(vllm_cpu_impl.Unavailable) as exc:
        vllm_cpu_impl.kernels.__wrapped__()
    assert "vllm is not installed" in str(exc.value) and "\n" not in str(exc.value)


def test_vllm_cpu_stays_out_of_the_default_run():
    """vllm-cpu runs only when named (a library, not a shipped default), and its module never
    imports vllm, so a run without --impl vllm-cpu pays nothing for it."""
    assert "vllm-cpu" in LIBRARIES and "vllm-cpu" not in SHIPPED
    tree = ast.parse((ROOT / "implementations" / "vllm_cpu_impl.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(name.split(".")[0] == "vllm" for name in imported), sorted(imported)


def test_vllm_cpu_noncausal_window_leaves_rows_unwritten(vllm_cpu_impl, vllm):
    """The finding of docs/libraries.md: non-causal, window 3, 20 queries over 10 keys: rows
    0..7 see no key, and vLLM's `vec` kernel never writes rows 12..19, whose windows hold
    keys."""
    Tq, Tk, w, D = 20, 10, 3, 32
    rng = np.random.default_rng(0)
    cache = vllm.paged_kv_cache(1, 32, 1, D, "float32")
    if cache.isa != "vec":
        pytest.skip(f"the finding is in the vec kernel; this CPU runs {cache.isa}")
    k, v = (vllm.asarray(rng.standard_normal((Tk, 1, D)), "float32") for _ in range(2))
    vllm.paged_kv_write(cache, k, v, vllm.asarray(np.arange(Tk), "int32"))
    q = vllm.asarray(rng.standard_normal((Tq, 1, D)), "float32")  # (Tq, Hq=1, D)
    cu_q = vllm.asarray(np.array([0, Tq]), "int32")
    lens = vllm.asarray(np.array([Tk]), "int32")
    ops = vllm_cpu_impl.kernels()
    plan = ops.get_scheduler_metadata(
        1, 1, 1, D, lens, q.dtype, cu_q, False, w, cache.isa, True, None, "auto"
    )
    out = q.new_full((Tq, 1, D), float("nan"))  # what the kernel leaves alone stays NaN
    ops.cpu_attention_with_kv_cache(
        q, cache.key_cache, cache.value_cache, out, cu_q, lens, 0.2, False, None, w,
        vllm.asarray(np.array([[0]]), "int32"), 0.0, plan, None, None, 1.0, 1.0, "auto",
    )  # fmt: skip
    unwritten = [i for i in range(8, Tq) if out[i].isnan().all()]  # rows 0..7: NaN or stale
    assert unwritten == list(range(12, 20)), f"rows with keys left NaN: {unwritten} (fixed?)"
