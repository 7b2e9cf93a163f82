"""Meta-tests: queries that see no key (a symmetric non-causal window, more queries than keys).

Such a query is inside the contract only for an implementation that declares "empty_rows"
(output exactly 0); for any other it is left out of VARLEN-EQ-PER-SEQ's and ATTN-WINDOW's
comparisons, while the other rows of the same call are still compared. The subjects are
twins of implementations/examples/limited_kernel.py (symmetric window, as vLLM's CPU kernel):
one answers NaN on key-less rows (0/0, as vLLM does), one also leaves the last rows that do
see keys unwritten in such a call (vLLM's `vec` kernel, docs/libraries.md).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import settings

import attnspec.implementations.examples.limited_kernel as kernel
from attnspec.specs.clauses import ClauseFailure
from attnspec.specs.profiles import KILL
from attnspec.specs.reference.attention import visible_mask
from attnspec.specs.runner import run_clause

CLAUSES = ["VARLEN-EQ-PER-SEQ", "ATTN-WINDOW"]
UNWRITTEN = 8  # rows with keys that vLLM's vec kernel skips, at the end of such a call
FEW = settings(KILL, max_examples=30)


def poison(o: np.ndarray, Tk: int, causal: bool, window: int | None, unwritten: bool) -> None:
    """In place, on one sequence's rows o (Tq, ...): NaN where a query sees no key, and (with
    `unwritten`, in a call that has such rows) NaN in its last UNWRITTEN rows that see keys."""
    seen = visible_mask(len(o), Tk, causal=causal, window=window, window_kind="symmetric")
    keyless = ~seen.any(axis=1)  # (Tq,)
    o[keyless] = np.nan
    if unwritten and keyless.any():
        tail = np.flatnonzero(~keyless)[-UNWRITTEN:]
        o[tail] = np.nan


def twin(name: str, *, unwritten: bool = False, empty_rows: bool = False) -> SimpleNamespace:
    """The limited kernel answering NaN on key-less rows (and, with `unwritten`, leaving rows
    unwritten), declaring "empty_rows" or not."""

    def attention(q, k, v, *, causal, window=None, **opts: Any) -> np.ndarray:
        o = kernel.attention(q, k, v, causal=causal, window=window, **opts)  # (B, Hq, Tq, Dv)
        rows = np.moveaxis(o, 2, 0)  # (Tq, B, Hq, Dv), a view
        poison(rows, k.shape[2], causal, window, unwritten)
        return o

    def varlen_attention(q, k, v, *, cu_seqlens_q, cu_seqlens_k, causal, window=None, **opts):  # type: ignore[no-untyped-def]
        o = kernel.varlen_attention(
            q, k, v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, causal=causal,
            window=window, **opts,
        )  # fmt: skip  # (total_q, Hq, Dv)
        for b in range(len(cu_seqlens_q) - 1):
            rows = slice(int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1]))
            Tk = int(cu_seqlens_k[b + 1] - cu_seqlens_k[b])
            poison(o[rows], Tk, causal, window, unwritten)
        return o

    options = kernel.options | ({"empty_rows"} if empty_rows else set())
    return SimpleNamespace(
        name=name,
        asarray=kernel.asarray,
        to_numpy=kernel.to_numpy,
        dtypes=kernel.dtypes,
        limits=kernel.limits,
        options=frozenset(options),
        attention=attention,
        varlen_attention=varlen_attention,
    )


@pytest.mark.parametrize("clause_id", CLAUSES)
def test_nan_on_keyless_rows_is_outside_the_contract(clause_id):
    """A kernel that answers NaN on queries that see no key passes when it does not declare
    "empty_rows", and fails (the row named) when it does: the draws reach such rows."""
    run_clause(clause_id, twin("keyless-nan"), settings_=FEW)
    with pytest.raises(ClauseFailure, match="sees no key") as failure:
        run_clause(clause_id, twin("keyless-nan-declared", empty_rows=True), settings_=FEW)
    assert failure.value.details.get("misbehaviour") == "NaN/Inf", failure.value


@pytest.mark.parametrize("clause_id", CLAUSES)
def test_unwritten_rows_with_keys_are_still_caught(clause_id):
    """Leaving out the key-less rows does not hide vLLM's third bug: rows that see keys left
    unwritten in a call that has key-less rows fail, with "empty_rows" undeclared."""
    with pytest.raises(ClauseFailure) as failure:
        run_clause(clause_id, twin("keyless-unwritten", unwritten=True), settings_=FEW)
    assert "sees no key" not in str(failure.value), failure.value
