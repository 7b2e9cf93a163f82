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

from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from specs import limits
from specs.attention import logit_error
from specs.clauses import clause
from specs.dtypes import UNIT_ROUNDOFF
from specs.paged import new_pool, pages, write
from specs.reference import attention as ref
from specs.reference.lse import log_sum_exp, lse_dtype, sequence_lse
from specs.reference.serving import dense, sequence_attention, sequence_magnitude
from specs.runner import Target, call_text
from specs.strategies import normal, seeds
from specs.tolerance import ClauseFailure, assert_close, budget, floor
from specs.varlen import (
    PAST,
    convention,
    draw_options,
    draw_packed,
    index,
    ragged_batches,
    require_option,
    split,
    supported,
)

LONG_KEYS = (2049, 4097, 65537)  # decode over a split-KV path, up to 65k keys (small heads)
HUGE_LOGITS = 1e5
LEVELS = (0.0, 0.0, 1e3, 1e4)  # logit offsets of merged parts: LSEs up to 1e4 apart
OPS = ("attention", "varlen_attention", "paged_attention")


@dataclass
class Packed:
    """An attention problem as packed sequences: q (total_q, Hq, D), per-sequence keys
    (Tk_b, Hkv, D) and values, offsets cu_q (B+1,), and the options of the call."""

    q: np.ndarray
    cu_q: np.ndarray
    keys: list[np.ndarray]
    values: list[np.ndarray]
    causal: bool
    opts: dict[str, Any]


def pick(t: Target, data: st.DataObject, ops: tuple[str, ...] = OPS) -> str:
    """One of the ops the implementation has."""
    return data.draw(st.sampled_from([op for op in ops if t.has(op)]), label="op")


def with_lse(
    t: Target,
    op: str,
    *natives: Any,
    o_shape: tuple[int, ...],
    lse_shape: tuple[int, ...],
    watch: tuple[Any, ...] = (),
    **kwargs: Any,
) -> tuple[np.ndarray, np.ndarray, str]:
    """A guarded op(..., return_lse=True): the output (checked for dtype and shape) and the lse
    (float64, checked for shape) as numpy, and the call's text; inputs must come back unchanged."""
    __tracebackhide__ = True
    text = call_text(op, natives, {**kwargs, "return_lse": True})
    inputs = tuple(x for x in natives if hasattr(x, "shape")) + watch
    before = [t.numpy(x) for x in inputs]
    out = t.call_pair(text, "o, lse", getattr(t.impl, op), *natives, return_lse=True, **kwargs)
    t.unchanged(inputs, before, text)
    o = t.result(out[0], text, o_shape)
    lse = t.numpy(out[1], text)
    if lse.shape != lse_shape:
        raise ClauseFailure(
            f"returned an lse of shape {lse.shape}, expected {lse_shape}\n  in {t.where(text)}",
            misbehaviour="wrong shape",
            call=t.where(text),
        )
    return o, lse, text


def run_op(
    t: Target, data: st.DataObject, op: str, p: Packed, *, lse: bool
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """`op` on the problem (dense: one batch entry per sequence, all of the same lengths; paged:
    a shuffled pool): the packed output (total_q, Hq, Dv), the lse (total_q, Hq) or None."""
    Hq, Dv = p.q.shape[1], p.values[0].shape[2]
    kw: dict[str, Any] = {"causal": p.causal, **p.opts}
    total = p.q.shape[0]
    if op == "attention":
        B = len(p.keys)
        q = t.native(p.q.reshape(B, -1, *p.q.shape[1:]).transpose(0, 2, 1, 3))  # (B, Hq, Tq, D)
        k = t.native(np.stack(p.keys).transpose(0, 2, 1, 3))  # (B, Hkv, Tk, D)
        v = t.native(np.stack(p.values).transpose(0, 2, 1, 3))  # (B, Hkv, Tk, Dv)
        Tq = total // B
        args: tuple[Any, ...] = (q, k, v)
        o_shape: tuple[int, ...] = (B, Hq, Tq, Dv)
        watch: tuple[Any, ...] = ()
    elif op == "varlen_attention":
        k_lens = [len(x) for x in p.keys]
        cu_k = np.concatenate([[0], np.cumsum(k_lens)]).astype(np.int32)
        arrays = {"cu_seqlens_q": index(t, p.cu_q), "cu_seqlens_k": index(t, cu_k)}
        args = tuple(t.native(x) for x in (p.q, np.concatenate(p.keys), np.concatenate(p.values)))
        o_shape, watch = (total, Hq, Dv), tuple(arrays.values())
        kw.update(arrays)
    else:
        args, arrays, watch = paged_call(t, data, p)
        o_shape = (total, Hq, Dv)
        kw.update(arrays)
    if lse:
        lse_shape = (o_shape[0], Hq, o_shape[2]) if op == "attention" else (total, Hq)
        o, l, text = with_lse(t, op, *args, o_shape=o_shape, lse_shape=lse_shape, watch=watch, **kw)
    else:
        text = call_text(op, args, kw)
        o = t.call_native(op, *args, expect_shape=o_shape, watch=watch, **kw)
        l = None
    if op == "attention":  # back to packed rows: batch entry b is sequence b
        o = o.transpose(0, 2, 1, 3).reshape(total, Hq, Dv)
        l = None if l is None else l.transpose(0, 2, 1).reshape(total, Hq)
    return o, l, text


def paged_call(
    t: Target, data: st.DataObject, p: Packed
) -> tuple[tuple[Any, ...], dict[str, Any], tuple[Any, ...]]:
    """A shuffled pool of small blocks holding each sequence's keys (a sequence may hold none):
    the positional arguments, index arrays and watched pages of paged_attention."""
    bs = data.draw(st.sampled_from([1, 3, 16]).map(limits.current().block_size), label="block_size")
    Hkv, D, Dv = p.keys[0].shape[1], p.keys[0].shape[2], p.values[0].shape[2]
    need = [-(-len(k) // bs) for k in p.keys]
    num_blocks = sum(need) + 1
    rng = np.random.default_rng(data.draw(seeds(), label="block shuffle seed"))
    free = list(rng.permutation(num_blocks))
    table = rng.integers(0, num_blocks, (len(need), max(need) + 1))  # spare columns: anything
    cache = new_pool(t, num_blocks, bs, type("H", (), {"Hkv": Hkv, "D": D, "Dv": Dv})())
    for b, n in enumerate(need):
        table[b, :n] = [free.pop() for _ in range(n)]
        pos = np.arange(len(p.keys[b]))
        if pos.size:
            write(t, cache, p.keys[b], p.values[b], table[b, pos // bs] * bs + pos % bs)
    arrays = {
        "block_table": index(t, table),
        "seq_lens": index(t, np.array([len(k) for k in p.keys])),
        "cu_seqlens_q": index(t, p.cu_q),
    }
    watch = (*arrays.values(), pages(t, cache, "k_pages"), pages(t, cache, "v_pages"))
    return (t.native(p.q), cache), arrays, watch


def compare_lse(
    t: Target,
    got: np.ndarray,
    want: np.ndarray,
    *,
    baseline: np.ndarray,
    size: float,
    n: int,
    what: str,
) -> None:
    """An lse against the float64 one: -inf exactly where no key is visible, never NaN or +inf,
    the rest within the budget of a plain same-precision computation, relative to the logits'
    size (`size`)."""
    __tracebackhide__ = True
    bad = np.isnan(got) | (got == np.inf) | ((got == -np.inf) != (want == -np.inf))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ClauseFailure(
            f"lse {got[where]} at index {where} where the reference is {want[where]:.6g} "
            f"(-inf only for a query that sees no key; {int(bad.sum())} such entries)\n  in {what}",
            misbehaviour="NaN/Inf",
            call=what,
            index=list(where),
        )
    fin = np.isfinite(want)
    if not fin.any():
        return
    base = np.where(np.isfinite(baseline), baseline, want)[fin]
    tol = max(budget(t.dtype, n, want[fin], base, size), floor("float32", n))
    assert_close(got[fin], want[fin], dtype=t.dtype, n=n, tol=tol, magnitude=size, what=what)


def check_packed(t: Target, p: Packed, o: np.ndarray, lse: np.ndarray | None, what: str) -> None:
    """Every sequence's rows against float64 attention over its own keys; rows that see no key
    exactly 0 with lse -inf; the lse against the float64 log-sum-exp."""
    __tracebackhide__ = True
    opts = convention({"causal": p.causal, **p.opts}, causal=p.causal)
    for b, (kb, vb) in enumerate(zip(p.keys, p.values, strict=True)):
        rows = slice(int(p.cu_q[b]), int(p.cu_q[b + 1]))
        qb = p.q[rows]
        if rows.stop == rows.start:
            continue
        where = t.where(
            f"{what}: sequence {b} (rows {rows.start}..{rows.stop - 1}, {len(kb)} keys)"
        )
        if len(kb):
            seen = ref.visible_mask(
                len(qb), len(kb), causal=p.causal, window=opts.get("window"),
                window_kind=opts.get("window_kind", "left"),
            ).any(axis=1)  # fmt: skip
        else:
            seen = np.zeros(len(qb), bool)
        empty = o[rows][~seen]
        if empty.size and not (np.isfinite(empty).all() and not empty.any()):
            i = int(np.flatnonzero(~seen)[0])
            raise ClauseFailure(
                f"query {i} sees no key, yet its output is {o[rows][i].ravel()[:4]}..., not 0\n"
                f"  in {where}",
                misbehaviour="NaN/Inf" if not np.isfinite(empty).all() else "wrong result",
                call=where,
            )
        if seen.any():
            row_opts = {**opts}
            exp = sequence_attention(qb, kb, vb, **row_opts)[seen]
            n = max(qb.shape[2], len(kb))
            assert_close(
                o[rows][seen],
                exp,
                dtype=t.dtype,
                n=n,
                baseline=sequence_attention(qb, kb, vb, precision=t.dtype, **row_opts)[seen],
                magnitude=sequence_magnitude(qb, kb, vb, **row_opts),
                typical=logit_error(t.dtype, *map(dense, (qb, kb, vb)), **row_opts),
                what=where,
            )
        if lse is None:
            continue
        if len(kb):
            want = sequence_lse(qb, kb, **opts)
            base = sequence_lse(qb, kb, precision=t.dtype, **opts)
            size = float(np.linalg.norm(np.abs(want[np.isfinite(want)]) + 1.0))
        else:
            want = base = np.full(lse[rows].shape, -np.inf)
            size = 1.0
        compare_lse(
            t, lse[rows], want, baseline=base, size=size, n=max(qb.shape[2], len(kb)),
            what=f"the lse (total_q, Hq) of {where}",
        )  # fmt: skip


def huge_scale(p: Packed) -> float:
    """A scale that makes the largest |q·k| within a sequence HUGE_LOGITS."""
    big = [
        float(np.max(np.abs(ref.logits(dense(p.q[a:b]), dense(kb)))))
        for a, b, kb in zip(p.cu_q[:-1], p.cu_q[1:], p.keys, strict=True)
        if b > a and len(kb)
    ]
    return HUGE_LOGITS / max(max(big, default=1.0), 1e-30)


def dense_problem(
    t: Target, data: st.DataObject, *, causal: bool, long: bool, empty: bool = False
) -> Packed:
    """B entries of one dense call as packed sequences: a few queries over LONG_KEYS keys (small
    heads), small shapes, or (`empty`) causal Tq > Tk or no keys at all."""
    lim = limits.current()
    B = data.draw(st.integers(1, 1 if long else 2), label="B")
    Hkv = data.draw(st.integers(1, 2), label="Hkv")
    G = data.draw(st.integers(1, 2 if long else 3), label="Hq/Hkv")
    D = lim.head_dim(data.draw(st.sampled_from((4, 8, 16) if long else (8, 16, 17, 64)), label="D"))
    Dv = lim.head_dim(data.draw(st.sampled_from((D, 8)), label="Dv"))
    if long:
        Tk = data.draw(st.sampled_from(LONG_KEYS), label="Tk")
        Tq = data.draw(st.integers(1, 4), label="Tq")
    elif empty:
        Tk = data.draw(st.integers(0, 6), label="Tk") if causal else 0
        Tq = data.draw(st.integers(Tk + 1, Tk + 6), label="Tq")
    else:
        Tk = data.draw(st.integers(1, 40), label="Tk")
        Tq = data.draw(st.integers(1, Tk if causal else 40), label="Tq")
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    q, k, v = t.inputs(
        normal(rng, (B * Tq, Hkv * G, D)),
        normal(rng, (B, Tk, Hkv, D)),
        normal(rng, (B, Tk, Hkv, Dv)),
    )
    cu_q = (np.arange(B + 1) * Tq).astype(np.int32)
    return Packed(q, cu_q, list(k), list(v), causal, {})


def packed_problem(t: Target, data: st.DataObject, op: str, *, empty: bool = False) -> Packed:
    """A ragged batch (specs.varlen.ragged_batches: often one sequence past 1024 keys), or with
    `empty` 1..4 short sequences of which some hold no key or fewer keys than queries."""
    causal = True if op == "paged_attention" else data.draw(st.booleans(), label="causal")
    causal = limits.current().causal(op, causal)
    if not empty:
        r = data.draw(ragged_batches(causal=causal), label="batch")
        q, k, v = draw_packed(t, data, r)
        return Packed(q, r.cu_q, split(k, r.cu_k), split(v, r.cu_k), causal, {})
    B = data.draw(st.integers(1, 4), label="sequences")
    k_lens = [data.draw(st.sampled_from([0, 0, 1, 3, 8]), label="keys") for _ in range(B)]
    q_lens = [data.draw(st.integers(0, k + 4 if causal else 6), label="queries") for k in k_lens]
    k_lens[0] = min(k_lens[0], 3)
    q_lens[0] = k_lens[0] + 1 if causal else max(q_lens[0], 1)  # sequence 0 has an empty row
    if not causal:
        k_lens[0] = 0
    Hkv = data.draw(st.integers(1, 2), label="Hkv")
    Hq = Hkv * data.draw(st.integers(1, 3), label="Hq/Hkv")
    D = limits.current().head_dim(data.draw(st.sampled_from((8, 16, 17)), label="D"))
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    q, k, v = t.inputs(
        normal(rng, (sum(q_lens), Hq, D)),
        normal(rng, (sum(k_lens), Hkv, D)),
        normal(rng, (sum(k_lens), Hkv, D)),
    )
    cu_q = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(k_lens)]).astype(np.int32)
    return Packed(q, cu_q, split(k, cu_k), split(v, cu_k), causal, {})


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
    typical = logit_error(t.dtype, q, k, v, causal=False, scale=scale)
    tol = budget(t.dtype, N, expected, baseline[0].transpose(1, 0, 2), magnitude, typical)
    tol += 2 * max(depth) * UNIT_ROUNDOFF[t.dtype]  # each merge stores its output once
    what = t.where(
        f"{n} parts of {Tk} keys (levels {levels.tolist()}, parts {part.tolist()[:16]}...) "
        f"attended and merged {len(order)} times: last {order[-1] if order else 'none'}"
    )
    assert_close(o, expected, dtype=t.dtype, n=N, tol=tol, magnitude=magnitude, what=what)
    want = log_sum_exp_union(q, k, scale)
    base = log_sum_exp_union(q, k, scale, precision=t.dtype)
    size = float(np.linalg.norm(np.abs(want) + 1.0))
    compare_lse(t, lse, want, baseline=base, size=size, n=N, what=f"the lse of {what}")


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
