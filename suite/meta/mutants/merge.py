"""Partial-state mutants: the log-sum-exp and merge bugs serving engines have shipped."""

from __future__ import annotations

import math
from functools import partial
from types import SimpleNamespace
from typing import Any

import numpy as np

import attnspec.implementations.numpy_impl as base
import attnspec.specs.cost_cascade as cost_cascade
from attnspec.implementations.numpy_impl.merge import merge_attention_states
from attnspec.specs.cost import Cost
from attnspec.specs.cost_clauses import CostSubject
from attnspec.suite.meta.mutants import Mutant, derive

OPS = ("attention", "varlen_attention", "paged_attention")
ALL = frozenset({"window", "softcap", "lse", "empty_rows"})


def lse_bug(op: str, bug: str, *args: Any, return_lse: bool = False, **kw: Any) -> Any:
    """numpy's `op` with one lse or empty-row bug switched on by name."""
    fn = getattr(base, op)
    o, lse = fn(*args, return_lse=True, **kw)
    if bug == "base2":  # FlashInfer's log2 handed on as a natural log
        lse = lse / math.log(2)
    elif bug == "before_softcap":  # the lse of the raw scaled logits, not the capped ones
        lse = fn(*args, return_lse=True, **{**kw, "softcap": None})[1]
    elif bug == "no_scale":  # the lse of q·k, the softmax scale left out
        lse = fn(*args, return_lse=True, **{**kw, "scale": 1.0})[1]
    elif bug == "plus_inf":  # flash-attn's +inf for a query without keys
        lse = np.where(lse == -np.inf, np.inf, lse).astype(lse.dtype)
    elif bug == "nan_rows":  # 0/0: a row without keys normalised by its zero sum
        empty = (lse == -np.inf)[..., None]  # (B, Hq, Tq, 1) or (total_q, Hq, 1)
        o = np.where(empty, np.nan, o).astype(o.dtype)
    return (o, lse) if return_lse else o


def lse_mutant(name: str, switch: str, bug: str, kills: tuple[str, ...]) -> Mutant:
    ops = {op: partial(lse_bug, op, switch) for op in OPS}
    impl = derive(
        base, f"mutant-{name}", **ops, paged_kv_cache=base.paged_kv_cache,
        paged_kv_write=base.paged_kv_write, options=ALL,
    )  # fmt: skip
    return Mutant(name, bug, impl, kills)


def merge_bug(bug: str, o_a: np.ndarray, lse_a: np.ndarray, o_b: np.ndarray, lse_b: np.ndarray):  # type: ignore[no-untyped-def]
    """A merge with one bug switched on by name."""
    la, lb = lse_a.astype(np.float64), lse_b.astype(np.float64)
    with np.errstate(all="ignore"):
        if bug == "no_max":  # e^lse directly: overflows past lse 709 (float64) or 88 (float32)
            ea, eb = np.exp(la.astype(np.float32)), np.exp(lb.astype(np.float32))
            lse = np.log(ea + eb)
            o = (ea[..., None] * o_a + eb[..., None] * o_b) / (ea + eb)[..., None]
        elif bug == "nan_empty":  # max-subtracted, but -inf - (-inf) = NaN when both are empty
            m = np.maximum(la, lb)
            wa, wb = np.exp(la - m), np.exp(lb - m)
            lse = m + np.log(wa + wb)
            o = (wa[..., None] * o_a + wb[..., None] * o_b) / (wa + wb)[..., None]
        elif bug == "zero_times_slot":  # weight 0 times a NaN / Inf output slot
            m = np.maximum(la, lb)
            m = np.where(np.isfinite(m), m, 0.0)
            wa, wb = np.exp(la - m), np.exp(lb - m)
            total = np.where(wa + wb > 0, wa + wb, 1.0)
            lse = np.where(wa + wb > 0, m + np.log(total), -np.inf)
            o = (wa[..., None] * o_a + wb[..., None] * o_b) / total[..., None]
        elif bug == "base2":  # the lse read as base 2 (FlashInfer's merge_state fed vLLM's lse)
            return merge_attention_states(
                o_a, lse_a * math.log2(math.e), o_b, lse_b * math.log2(math.e)
            )
        else:  # "prefix_twice": side a (the shared prefix) counted twice
            return merge_attention_states(o_a, lse_a + math.log(2), o_b, lse_b)
    return o.astype(o_a.dtype), lse.astype(lse_a.dtype)


def merge_mutant(name: str, switch: str, bug: str, kills: tuple[str, ...]) -> Mutant:
    impl = derive(
        base, f"mutant-{name}", merge_attention_states=partial(merge_bug, switch),
        attention=base.attention, varlen_attention=base.varlen_attention,
        paged_attention=base.paged_attention, paged_kv_cache=base.paged_kv_cache,
        paged_kv_write=base.paged_kv_write, options=ALL,
    )  # fmt: skip
    return Mutant(name, bug, impl, kills)


def cascade_prefix_per_request(P, suffix_lens, Hq, Hkv, D, E, lse_bytes=4):  # type: ignore[no-untyped-def]
    """A cascade cost whose prefix pass reads the prefix once per request."""
    right = cost_cascade.cascade_decode_cost(P, suffix_lens, Hq, Hkv, D, E, lse_bytes)
    again = E * Hkv * P * 2 * D * (len(suffix_lens) - 1)
    return cost_cascade.CascadeCost(
        right.dense, right.prefix + Cost(0, again), right.suffixes, right.merge
    )


def cascade_no_merge(P, suffix_lens, Hq, Hkv, D, E, lse_bytes=4):  # type: ignore[no-untyped-def]
    """A cascade cost that leaves out the merge pass (and the lse)."""
    right = cost_cascade.cascade_decode_cost(P, suffix_lens, Hq, Hkv, D, E, lse_bytes)
    return cost_cascade.CascadeCost(right.dense, right.prefix, right.suffixes, Cost(0, 1))


def cost_mutant(name: str, bug: str, fn: Any) -> Mutant:
    names = ("varlen_attention_cost", "attention_cost")
    model = SimpleNamespace(
        name=f"mutant-{name}",
        cascade_decode_cost=fn,
        **{n: getattr(cost_cascade, n) for n in names},
    )
    return Mutant(name, bug, CostSubject(model), ("COST-CASCADE",))


MUTANTS = [
    lse_mutant(
        "lse-base2",
        "base2",
        "the lse is a base-2 log (FlashInfer's convention) handed on as natural",
        ("LSE-REF",),
    ),
    lse_mutant(
        "lse-before-softcap",
        "before_softcap",
        "the lse is taken over the logits before the soft-cap",
        ("LSE-REF",),
    ),
    lse_mutant(
        "lse-no-scale",
        "no_scale",
        "the lse ignores the softmax scale (log-sum-exp of q·k)",
        ("LSE-REF",),
    ),
    lse_mutant(
        "lse-plus-inf-empty",
        "plus_inf",
        "a query without keys gets lse +inf (flash-attn's bug), not -inf",
        ("ATTN-EMPTY-ROWS",),
    ),
    lse_mutant(
        "empty-rows-nan",
        "nan_rows",
        "a query without keys is normalised by its zero sum: NaN output",
        ("ATTN-EMPTY-ROWS",),
    ),
    merge_mutant(
        "merge-no-max",
        "no_max",
        "merge exponentiates the lse without subtracting the max (overflows at lse 1e3)",
        ("MERGE-EQ-UNION",),
    ),
    merge_mutant(
        "merge-both-empty-nan",
        "nan_empty",
        "merging two empty states computes -inf - (-inf) = NaN",
        ("MERGE-EMPTY",),
    ),
    merge_mutant(
        "merge-zero-times-slot",
        "zero_times_slot",
        "an empty side's weight 0 multiplies its NaN/Inf output slot",
        ("MERGE-EMPTY",),
    ),
    merge_mutant(
        "merge-base2",
        "base2",
        "merge reads the natural-log lse as base 2 (exp2 weights)",
        ("MERGE-EQ-UNION",),
    ),
    merge_mutant(
        "cascade-prefix-twice",
        "prefix_twice",
        "the cascade counts the shared prefix twice (its state weighs double in the merge)",
        ("CASCADE-EQ-DENSE",),
    ),
    cost_mutant(
        "cascade-cost-prefix-per-request",
        "cascade_decode_cost reads the shared prefix once per request",
        cascade_prefix_per_request,
    ),
    cost_mutant(
        "cascade-cost-no-merge",
        "cascade_decode_cost leaves out the merge pass and the lse",
        cascade_no_merge,
    ),
]
