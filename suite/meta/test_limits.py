"""Meta-tests: declared limits narrow the serving draws; they never skip a clause or hide a bug.

The subject is implementations/examples/limited_kernel.py, a numpy kernel that raises, as vLLM's
CPU paged attention does, on block sizes that are not multiples of 16, on head dims outside its
list, and on non-causal paged calls, and whose non-causal window is symmetric. It declares all
of that in `limits`; every varlen, paged and option clause must then run on it at the default
tier with no skip and no failure, and its bug-carrying twin must still be caught.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import settings

import attnspec.implementations.examples.limited_kernel as kernel
import attnspec.specs.catalog
from attnspec.specs import profiles
from attnspec.specs.clauses import ClauseFailure
from attnspec.specs.profiles import KILL
from attnspec.specs.reference.attention import visible_mask
from attnspec.specs.runner import run_clause, summarised
from attnspec.specs.threads import one_blas_thread

CLAUSES = [
    "VARLEN-EQ-PER-SEQ",
    "VARLEN-NO-CROSS",
    "PAGED-WRITE-SLOTS",
    "PAGED-EQ-DENSE",
    "PAGED-IGNORES-UNOWNED",
    "PAGED-DECODE-EQ-RECOMPUTE",
    "ATTN-WINDOW",
    "ATTN-SOFTCAP",
]


def variant(name: str, **changes: object) -> SimpleNamespace:
    """The example kernel with some attributes replaced."""
    attrs = {a: getattr(kernel, a) for a in dir(kernel) if not a.startswith("_")}
    return SimpleNamespace(**{**attrs, "name": name, **changes})


def default_tier() -> settings:
    profiles.register()
    attnspec.specs.catalog.all_clauses()
    return settings.get_profile("attnspec-default")


@pytest.mark.parametrize("clause_id", CLAUSES)
def test_limited_kernel_runs_every_clause(clause_id):
    """Each varlen, paged and option clause runs on the limited kernel at the default tier
    without a skip or a failure, and reports what the declaration left out."""
    with one_blas_thread(), summarised() as summary:
        run_clause(clause_id, kernel, settings_=default_tier())
    assert "block sizes multiples of 16" in summary["limits"], summary
    if clause_id.startswith("PAGED"):
        assert any(s.startswith("block size") for s in summary["left_out"]), summary


def test_undeclared_limits_end_the_clause():
    """Without its declaration the kernel raises on the first draw: the limits are what let
    the clause run."""
    bare = variant("limited-numpy-undeclared", limits=None)
    with pytest.raises(ClauseFailure) as failure:
        run_clause("PAGED-EQ-DENSE", bare, settings_=settings(KILL, max_examples=3))
    assert failure.value.details.get("misbehaviour") == "raised", failure.value


def test_nan_past_seq_len_is_caught_under_limits():
    """A kernel that reads a sequence's whole last block and masks the slots past seq_len by
    their logits only (0 x NaN, as vLLM's CPU kernel does) fails PAGED-IGNORES-UNOWNED, drawn
    inside the same limits (block sizes 16, 32, ...)."""

    def paged_attention(q, cache, *, block_table, seq_lens, cu_seqlens_q, causal=True, **opts):
        return kernel.read_paged(
            q, cache, block_table, seq_lens, cu_seqlens_q, causal, whole_blocks=True, **opts
        )

    leaky = variant("limited-numpy-nan-leak", paged_attention=paged_attention)
    with pytest.raises(ClauseFailure) as failure:
        run_clause("PAGED-IGNORES-UNOWNED", leaky, settings_=KILL)
    assert failure.value.details.get("misbehaviour") != "raised", failure.value


def test_window_convention_is_the_declared_one():
    """The symmetric kernel declared as left-windowed fails ATTN-WINDOW: the reference follows
    the convention an implementation declares."""
    wrong = variant("limited-numpy-says-left", limits={**kernel.limits, "window": "left"})
    with pytest.raises(ClauseFailure):
        run_clause("ATTN-WINDOW", wrong, settings_=KILL)


def test_symmetric_window_mask():
    """A symmetric window lets the query at position p see keys with |j - p| < w; under the
    causal mask it equals the left window."""
    p = np.arange(6)[:, None]
    j = np.arange(6)[None, :]
    got = visible_mask(6, 6, causal=False, window=2, window_kind="symmetric")
    assert np.array_equal(got, np.abs(j - p) < 2)
    causal = visible_mask(6, 6, causal=True, window=2, window_kind="symmetric")
    assert np.array_equal(causal, visible_mask(6, 6, causal=True, window=2))
