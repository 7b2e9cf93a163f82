"""Partial attention states: the log-sum-exp every attention op can return, queries that see no
key, and merging states by their log-sum-exp (split-KV decoding, chunked prefill over a cached
context, cascade attention, context parallelism).

Options, declared in an implementation's `options` (else the clause skips, naming it): "lse"
(return_lse=True on attention, varlen_attention and paged_attention returns (o, lse), lse
(B, Hq, Tq) dense and (total_q, Hq) packed, natural log, float32 or float64 for float64) and
"empty_rows" (a query with no visible key: causal Tq > Tk, a sequence without keys, a paged
sequence holding fewer tokens than its queries; output 0 and lse -inf, never NaN).
`merge_attention_states(o_a, lse_a, o_b, lse_b) -> (o, lse)` takes vLLM's / FlashInfer's layout:
outputs (T, H, Dv) and lse (T, H).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from attnspec.specs import limits
from attnspec.specs.attention import logit_error
from attnspec.specs.clauses import clause
from attnspec.specs.dtypes import UNIT_ROUNDOFF
from attnspec.specs.partial import (
    Packed,
    check_packed,
    compare_lse,
    dense_problem,
    huge_scale,
    packed_problem,
    pick,
    run_op,
    with_lse,
)
from attnspec.specs.reference import attention as ref
from attnspec.specs.reference.lse import log_sum_exp, lse_dtype, lse_rounding
from attnspec.specs.runner import Target, call_text
from attnspec.specs.strategies import normal, seeds
from attnspec.specs.tolerance import ClauseFailure, assert_close, budget
from attnspec.specs.varlen import PAST, draw_options, require_option, supported

__all__ = ["Packed", "check_packed", "merge", "with_lse"]  # also used by attnspec.specs.quant
LEVELS = (0.0, 0.0, 1e3, 1e4)  # logit offsets of merged parts: LSEs up to 1e4 apart


@clause(
    "LSE-REF",
    "with return_lse=True, attention, varlen_attention and paged_attention also return the "
    "natural-log log-sum-exp of each query's scaled, soft-capped, masked and windowed logits "
    "((B, Hq, Tq) dense, (total_q, Hq) packed) equal to the float64 reference, for logits up "
    "to 1e5 and up to 65537 keys",
    needs=("attention|varlen_attention|paged_attention",),
)
def lse_ref(t: Target, data: st.DataObject) -> None:
    require_option(t, "lse")
    op = pick(t, data)
    if op == "attention":
        long = data.draw(st.sampled_from(["long", "short", "short"]), label="shape kind") == "long"
        causal = limits.current().causal(op, data.draw(st.booleans(), label="causal"))
        p = dense_problem(t, data, causal=causal, long=long)
    else:
        p = packed_problem(t, data, op)
    longest = max(len(k) for k in p.keys)
    p.opts = draw_options(t, data, longest, causal=p.causal, prefer=longest > PAST)
    if data.draw(st.sampled_from(["plain", "plain", "huge"]), label="logits") == "huge":
        p.opts["scale"] = huge_scale(p)
    o, lse, text = run_op(t, data, op, p, lse=True)
    check_packed(t, p, o, lse, text)


@clause(
    "ATTN-EMPTY-ROWS",
    "a query that sees no key (causal Tq > Tk, no keys at all, a varlen or paged sequence "
    "without keys or with fewer keys than queries) gets output exactly 0 and lse -inf, never "
    "NaN, while the other queries equal the reference",
    needs=("attention|varlen_attention|paged_attention",),
)
def attn_empty_rows(t: Target, data: st.DataObject) -> None:
    require_option(t, "empty_rows")
    op = pick(t, data)
    if op == "attention":
        causal = limits.current().causal(op, data.draw(st.booleans(), label="causal"))
        p = dense_problem(t, data, causal=causal, long=False, empty=True)
    else:
        p = packed_problem(t, data, op, empty=True)
    p.opts = draw_options(t, data, max(len(k) for k in p.keys), causal=p.causal)
    o, lse, text = run_op(t, data, op, p, lse="lse" in supported(t))
    check_packed(t, p, o, lse, text)


def merge(
    t: Target, a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, str]:
    """The implementation's merge_attention_states of two states (o (T, H, Dv) in the working
    dtype, lse (T, H) in float32, float64 for float64): the merged pair as float64, the call."""
    __tracebackhide__ = True
    lse = lse_dtype(t.dtype)
    natives = (t.native(a[0]), t.native(a[1], lse), t.native(b[0]), t.native(b[1], lse))
    return merge_call(t, natives, a[0].shape)


def merge_call(
    t: Target, natives: tuple[Any, ...], o_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, str]:
    """A guarded merge_attention_states call on native states."""
    __tracebackhide__ = True
    text = call_text("merge_attention_states", natives, {})
    before = [t.numpy(x) for x in natives]
    out = t.call_pair(text, "o, lse", t.impl.merge_attention_states, *natives)
    t.unchanged(natives, before, text)
    o = t.result(out[0], text, o_shape)
    lse = t.numpy(out[1], text)
    if lse.shape != o_shape[:2]:
        raise ClauseFailure(
            f"returned an lse of shape {lse.shape}, expected {o_shape[:2]}\n  in {t.where(text)}",
            misbehaviour="wrong shape",
            call=t.where(text),
        )
    return o, lse, t.where(text)


def garbage_output(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """What an empty state's output slot may hold: zeros, NaN, Inf or huge values."""
    fill = {"zeros": 0.0, "NaN": np.nan, "Inf": np.inf, "huge": 3e4}[kind]
    out = np.full(shape, fill)
    out[..., ::2] = fill if kind != "huge" else -fill
    return out


@clause(
    "MERGE-EQ-UNION",
    "attending 1-8 disjoint parts of a key set (contiguous or scattered, some empty, some of "
    "one key, with LSEs up to 1e4 apart) with their LSEs and merging them with "
    "merge_attention_states in any order and tree shape gives the output and LSE of attention "
    "over the union",
    needs=("attention", "merge_attention_states"),
)
def merge_eq_union(t: Target, data: st.DataObject) -> None:
    require_option(t, "lse")
    lim = limits.current()
    Hkv = data.draw(st.integers(1, 2), label="Hkv")
    Hq = Hkv * data.draw(st.integers(1, 3), label="Hq/Hkv")
    D = lim.head_dim(data.draw(st.sampled_from((8, 16, 17, 32)), label="D"))
    Dv = lim.head_dim(data.draw(st.sampled_from((D, 8)), label="Dv"))
    Tq = data.draw(st.integers(1, 4), label="Tq")
    Tk = data.draw(st.sampled_from([1, 2, 7, 64, 300]) | st.integers(1, 40), label="Tk")
    n = data.draw(st.integers(1, 8), label="parts")
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    if data.draw(st.booleans(), label="scattered"):
        part = rng.integers(0, n, Tk)  # (Tk,) each key's part
    else:
        cuts = np.sort(rng.integers(0, Tk + 1, n - 1))  # repeated cuts: empty parts
        part = np.searchsorted(cuts, np.arange(Tk), side="right")
    levels = np.array([data.draw(st.sampled_from(LEVELS), label="level") for _ in range(n)])
    scale = 1.0 / np.sqrt(D)
    q = normal(rng, (1, Hq, Tq, D))
    k = normal(rng, (1, Hkv, Tk, D))
    v = normal(rng, (1, Hkv, Tk, Dv))
    q[..., 0] = 8.0
    k[..., 0] += levels[part] / (8.0 * scale)  # part p's logits sit near levels[p]
    q, k, v = t.inputs(q, k, v)
    kind = data.draw(st.sampled_from(["zeros", "NaN", "Inf", "huge"]), label="empty output slot")
    states = []
    for i in range(n):
        keys = np.flatnonzero(part == i)
        if keys.size == 0:
            o_e = t.inputs(garbage_output(rng, (Tq, Hq, Dv), kind))[0]
            states.append((o_e, np.full((Tq, Hq), -np.inf)))
            continue
        o, lse, _ = with_lse(
            t, "attention", t.native(q), t.native(k[:, :, keys]), t.native(v[:, :, keys]),
            o_shape=(1, Hq, Tq, Dv), lse_shape=(1, Hq, Tq), causal=False, scale=scale,
        )  # fmt: skip
        states.append((o[0].transpose(1, 0, 2), lse[0].T))  # (Tq, Hq, Dv), (Tq, Hq)
    depth = [0] * n
    order = []
    while len(states) > 1:
        i, j = data.draw(st.permutations(range(len(states))), label="merge pair")[:2]
        o, lse, text = merge(t, states[i], states[j])
        order.append(text)
        d = max(depth[i], depth[j]) + 1
        for x in sorted((i, j), reverse=True):
            states.pop(x)
            depth.pop(x)
        states.append((o, lse))
        depth.append(d)
    o, lse = states[0]
    expected = ref.attention(q, k, v, causal=False, scale=scale)[0].transpose(1, 0, 2)
    baseline = ref.attention(q, k, v, causal=False, scale=scale, precision=t.dtype)
    magnitude = ref.magnitude(q, k, v, causal=False, scale=scale)
    N = max(D, Tk)
    # A logit offset by a level is a dot product whose first term is that large: each of the
    # other D - 1 terms is added at its size, so it carries about sqrt(D) roundings, not one.
    typical = logit_error(t.dtype, q, k, v, causal=False, scale=scale) * np.sqrt(D)
    tol = budget(t.dtype, N, expected, baseline[0].transpose(1, 0, 2), magnitude, typical)
    # Each merge on a path stores its output once (u of the dtype) and weighs by e^(lse_x - lse)
    # from lse stored in float32: an lse of 1e4 is off by up to u·1e4, the weight by as much.
    top = float(np.max(np.abs(np.where(np.isfinite(lse), lse, 0.0))))
    tol += 2 * max(depth) * (UNIT_ROUNDOFF[t.dtype] + UNIT_ROUNDOFF[lse_dtype(t.dtype)] * top)
    what = t.where(
        f"{n} parts of {Tk} keys (levels {levels.tolist()}, parts {part.tolist()[:16]}...) "
        f"attended and merged {len(order)} times: last {order[-1] if order else 'none'}"
    )
    assert_close(o, expected, dtype=t.dtype, n=N, tol=tol, magnitude=magnitude, what=what)
    want = log_sum_exp_union(q, k, scale)
    base = log_sum_exp_union(q, k, scale, precision=t.dtype)
    size = float(np.linalg.norm(np.abs(want) + 1.0))
    rounding = lse_rounding(t.dtype, q, k, causal=False, scale=scale)[0].T  # (Tq, Hq)
    compare_lse(
        t, lse, want, baseline=base, size=size, n=N, what=f"the lse of {what}", typical=rounding
    )


def log_sum_exp_union(
    q: np.ndarray, k: np.ndarray, scale: float, precision: str = "float64"
) -> np.ndarray:
    """The lse (Tq, Hq) of one batch entry's queries over all keys, non-causal."""
    return log_sum_exp(q, k, causal=False, scale=scale, precision=precision)[0].T


@clause(
    "MERGE-EMPTY",
    "an empty state (lse -inf) is neutral whatever its output slot holds (0, NaN, Inf, huge): "
    "merge(x, empty) and merge(empty, x) give x exactly, and merge(empty, empty) gives output "
    "0 and lse -inf, never NaN or +inf",
    needs=("merge_attention_states",),
)
def merge_empty(t: Target, data: st.DataObject) -> None:
    T = data.draw(st.integers(1, 8), label="T")
    H = data.draw(st.integers(1, 4), label="H")
    Dv = data.draw(st.sampled_from([1, 8, 16, 17]), label="Dv")
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    kind = data.draw(st.sampled_from(["NaN", "zeros", "Inf", "huge"]), label="empty output slot")
    level = data.draw(st.sampled_from([1.0, 1e4, 1e3]), label="lse size")
    lse_x = np.round(normal(rng, (T, H), level), 2)  # (T, H)
    lse_x[rng.random((T, H)) < 0.25] = -np.inf  # some of x's own rows are empty too
    o_x = t.inputs(normal(rng, (T, H, Dv)))[0]  # (T, H, Dv)
    o_x[lse_x == -np.inf] = garbage_output(rng, (T, H, Dv), kind)[lse_x == -np.inf]
    lse_x = lse_x.astype(lse_dtype(t.dtype)).astype(np.float64)  # as the merge receives it
    empty = (t.inputs(garbage_output(rng, (T, H, Dv), kind))[0], np.full((T, H), -np.inf))
    x = (o_x, lse_x)
    want_o = np.where(np.isfinite(lse_x)[..., None], o_x, 0.0)
    for a, b, side in ((x, empty, "merge(x, empty)"), (empty, x, "merge(empty, x)")):
        o, lse, text = merge(t, a, b)
        exact(t, o, want_o, lse, lse_x, f"{side}: {text}")
    o, lse, text = merge(t, empty, (empty[0][::-1].copy(), empty[1]))
    exact(t, o, np.zeros_like(o), lse, np.full_like(lse, -np.inf), f"merge(empty, empty): {text}")


def exact(
    t: Target, o: np.ndarray, want_o: np.ndarray, lse: np.ndarray, want_lse: np.ndarray, what: str
) -> None:
    """o and lse equal what they must be, bit for bit (NaN never)."""
    __tracebackhide__ = True
    for name, got, want in (("lse", lse, want_lse), ("output", o, want_o)):
        wrong = ~((got == want) | (np.isinf(want) & (got == want)))
        if wrong.any():
            where = tuple(int(i) for i in np.argwhere(wrong)[0])
            raise ClauseFailure(
                f"{name}[{where}] is {got[where]}, expected exactly {want[where]} (an empty state "
                f"must be neutral; {int(wrong.sum())} entries differ)\n  in {what}",
                misbehaviour="NaN/Inf" if not np.isfinite(got[where]) else "wrong result",
                call=what,
                index=list(where),
            )
