"""Partial attention states, the shared machinery: an attention problem as packed sequences,
the guarded calls that return (o, lse) through attention, varlen_attention or paged_attention,
and the comparisons (rows that see no key exactly 0 with lse -inf, the rest and the lse against
float64). The clauses are in attnspec.specs.merge and attnspec.specs.cascade.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from attnspec.specs import limits
from attnspec.specs.attention import logit_error
from attnspec.specs.attention_options import capped_logit_error
from attnspec.specs.paged import new_pool, pages, write
from attnspec.specs.paged_layouts import Heads
from attnspec.specs.reference import attention as ref
from attnspec.specs.reference.lse import sequence_lse, sequence_lse_rounding
from attnspec.specs.reference.serving import dense, sequence_attention, sequence_magnitude
from attnspec.specs.runner import Target, call_text
from attnspec.specs.strategies import normal, seeds
from attnspec.specs.tolerance import FACTOR, ClauseFailure, assert_close, budget, floor
from attnspec.specs.varlen import convention, draw_packed, index, ragged_batches, split

LONG_KEYS = (2049, 4097, 65537)  # decode over a split-KV path, up to 65k keys (small heads)
HUGE_LOGITS = 1e5
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
    cache = new_pool(t, num_blocks, bs, Heads(Hkv, Hkv, D, Dv))
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
    typical: np.ndarray | None = None,
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
    if typical is not None:  # one baseline's logit roundings may cancel by luck: its typical size
        tol = max(tol, FACTOR * float(np.linalg.norm(typical[fin])) / size)
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
            mask = ref.visible_mask(
                len(qb), len(kb), causal=p.causal, window=opts.get("window"),
                window_kind=opts.get("window_kind", "left"),
            )  # fmt: skip
            seen = np.asarray(mask.any(axis=1), bool)  # (Tq,) queries that see some key
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
            compare_rows(t, qb, kb, vb, o[rows], seen, opts, where)
        if lse is None:
            continue
        typical = None
        if len(kb):
            want = sequence_lse(qb, kb, **opts)
            base = sequence_lse(qb, kb, precision=t.dtype, **opts)
            typical = np.where(np.isfinite(want), sequence_lse_rounding(t.dtype, qb, kb, **opts), 0)
            size = float(np.linalg.norm(np.abs(want[np.isfinite(want)]) + 1.0))
        else:
            want = base = np.full(lse[rows].shape, -np.inf)
            size = 1.0
        compare_lse(
            t, lse[rows], want, baseline=base, size=size, n=max(qb.shape[2], len(kb)),
            what=f"the lse (total_q, Hq) of {where}", typical=typical,
        )  # fmt: skip


def compare_rows(
    t: Target,
    qb: np.ndarray,
    kb: np.ndarray,
    vb: np.ndarray,
    out: np.ndarray,
    seen: np.ndarray,
    opts: dict[str, Any],
    where: str,
) -> None:
    """One sequence's rows that see a key (`seen`) against float64 attention; with a soft-cap,
    the budget also covers the capped logits' typical rounding (as in ATTN-SOFTCAP)."""
    __tracebackhide__ = True
    expected = sequence_attention(qb, kb, vb, **opts)
    magnitude = sequence_magnitude(qb, kb, vb, **opts)
    n = max(qb.shape[2], len(kb))
    tol = budget(
        t.dtype,
        n,
        expected,
        sequence_attention(qb, kb, vb, precision=t.dtype, **opts),
        magnitude,
        logit_error(t.dtype, *map(dense, (qb, kb, vb)), **opts),
    )
    if opts.get("softcap") is not None:
        scale = opts.get("scale")
        sc = 1.0 / np.sqrt(qb.shape[2]) if scale is None else scale
        capped = capped_logit_error(
            t.dtype, dense(qb), dense(kb), causal=opts["causal"], scale=sc, softcap=opts["softcap"]
        )
        tol = max(tol, 4 * capped)
    assert_close(
        out[seen], expected[seen], dtype=t.dtype, n=n, tol=tol, magnitude=magnitude, what=where
    )


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
    """A ragged batch (attnspec.specs.varlen.ragged_batches: often one sequence past 1024 keys), or with
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
