"""Attention clauses: softmax attention against its float64 reference and its invariants."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
from hypothesis import strategies as st

from attnspec.specs.clauses import clause
from attnspec.specs.dtypes import UNIT_ROUNDOFF
from attnspec.specs.reference import attention as ref
from attnspec.specs.runner import Target
from attnspec.specs.strategies import (
    AttnShape,
    attn_cases,
    hostile_logits,
    logit_sizes,
    normal,
    scales,
    seeds,
    shaped_values,
    tie_keys,
    value_kinds,
)
from attnspec.specs.tolerance import ClauseFailure, assert_close, budget, floor

LEAK_SCALE = 1e3  # perturbed values: a leaked weight of 1e-3 moves an output by about 1


def draw_qkv(
    t: Target, data: st.DataObject, shape: AttnShape, qk_scale: float = 1.0, stream: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q, k, v for `shape`, rounded onto the working dtype; values normal, offset by 1e4, tiny,
    or with keys that tie exactly (value_kinds)."""
    kind = data.draw(value_kinds(), label="values")
    # `stream` tells calls apart: the first example draws every seed as 0, and repeated calls
    # must still get fresh inputs.
    rng = np.random.default_rng((data.draw(seeds(), label="seed"), stream))
    q = normal(rng, shape.q, qk_scale)  # (B, Hq, Tq, D)
    k = normal(rng, shape.k, qk_scale)  # (B, Hkv, Tk, D)
    v = shaped_values(rng, shape.v, kind, t.dtype)  # (B, Hkv, Tk, Dv)
    q, k, v = t.inputs(q, tie_keys(k) if kind == "ties" else k, v)
    return q, k, v


def attend(t: Target, shape: AttnShape, q, k, v, *, causal: bool, scale=None) -> np.ndarray:
    """The implementation's attention output, checked for shape and dtype."""
    return t.call("attention", q, k, v, causal=causal, scale=scale, expect_shape=shape.o)


def logit_error(dtype: str, q, k, v, **opts: Any) -> float:
    """The normwise output error that rounding each logit to `dtype` typically causes.

    A stored logit s_j is off by about u|s_j|, and output o = sum_j p_j v_j moves by
    p_j (v_j - o) per unit of s_j, so the typical (root-sum-square) error per output element is
    u sqrt(sum_j p_j^2 s_j^2 (v_j - o)^2), relative to max(||o||, ||P|V|||) as in
    normwise_error. At large logits a few dominant ones set the error, and one plain
    computation's roundings may happen to cancel: a budget of FACTOR x its error alone gave a
    correct float16 decode (two logits near 19) false alarms in 2% of draws. `opts` are those
    of attnspec.specs.reference.attention.attention (causal, scale, window, softcap)."""
    u = UNIT_ROUNDOFF[dtype]
    s = ref.scores(q, k, **opts)  # (B, Hkv, G, Tq, Tk), -inf where masked
    p = ref.softmax(s)  # (B, Hkv, G, Tq, Tk)
    w = (p * np.where(np.isfinite(s), s, 0.0)) ** 2  # (B, Hkv, G, Tq, Tk)
    vv = np.asarray(v, np.float64)[:, :, None]  # (B, Hkv, 1, Tk, Dv)
    o = p @ vv  # (B, Hkv, G, Tq, Dv)
    var = w @ (vv * vv) - 2 * (w @ vv) * o + w.sum(-1, keepdims=True) * o * o  # (..., Dv)
    size = max(float(np.linalg.norm(o)), float(np.linalg.norm(p @ np.abs(vv))), 1e-30)
    return u * float(np.sqrt(max(float(var.sum()), 0.0))) / size


def compare_with_reference(
    t: Target,
    shape: AttnShape,
    out: np.ndarray,
    q,
    k,
    v,
    *,
    causal: bool,
    scale,
    what: str,
    ties: bool = False,
) -> None:
    """The output against float64 attention, within the budget of a plain same-precision run
    and of the logits' typical rounding (`logit_error`), unless the visible logits `ties`
    exactly: equal logits round alike, and softmax ignores a common shift."""
    __tracebackhide__ = True
    expected, magnitude = ref.attention_and_magnitude(q, k, v, causal=causal, scale=scale)
    assert_close(
        out,
        expected,
        dtype=t.dtype,
        n=reduction(shape),
        baseline=ref.attention(q, k, v, causal=causal, scale=scale, precision=t.dtype),
        magnitude=magnitude,
        typical=0.0 if ties else logit_error(t.dtype, q, k, v, causal=causal, scale=scale),
        what=what,
    )


def compare_pair(
    t: Target,
    shape: AttnShape,
    got: np.ndarray,
    want: np.ndarray,
    q,
    k,
    v,
    *,
    causal: bool,
    what: str,
) -> None:
    """Two of the implementation's outputs that should agree: within twice its own budget."""
    __tracebackhide__ = True
    expected, magnitude = ref.attention_and_magnitude(q, k, v, causal=causal)
    baseline = ref.attention(q, k, v, causal=causal, precision=t.dtype)
    typical = logit_error(t.dtype, q, k, v, causal=causal)
    tol = 2 * budget(t.dtype, reduction(shape), expected, baseline, magnitude, typical)
    assert_close(
        got, want, dtype=t.dtype, n=reduction(shape), tol=tol, magnitude=magnitude, what=what
    )


def reduction(shape: AttnShape) -> int:
    """The longest reduction in attention: the head dim for scores, Tk for the output."""
    return max(shape.D, shape.Tk)


@clause(
    "ATTN-REF",
    "attention equals the float64 reference, causal (bottom-right aligned) or not, "
    "for Tq != Tk, GQA/MQA head groups, odd head dims and custom scales",
    needs=("attention",),
)
def attn_ref(t: Target, data: st.DataObject) -> None:
    causal = data.draw(st.booleans(), label="causal")
    shapes = data.draw(attn_cases(causal=causal, preset=t.preset), label="shapes")
    scale = data.draw(scales(), label="scale")
    # Each shape twice, interleaved, with fresh inputs every call: a stale result, a reused
    # workspace or state cached per shape shows as a wrong answer to a later call.
    calls = shapes * 2
    for n, s in enumerate(calls):
        q, k, v = draw_qkv(t, data, s, stream=n)
        out = attend(t, s, q, k, v, causal=causal, scale=scale)
        what = t.where(
            f"call {n + 1} of {len(calls)} (shapes {' / '.join(str(c.q) for c in calls)}, "
            f"fresh inputs each): attention(q{s.q}, k{s.k}, v{s.v}, causal={causal}, "
            f"scale={scale})"
        )
        compare_with_reference(t, s, out, q, k, v, causal=causal, scale=scale, what=what)


@clause(
    "ATTN-CAUSAL-NO-FUTURE",
    "with causal=True, replacing the keys and values a query cannot see leaves its output "
    "unchanged (a leaked weight of 1e-3 is caught), and a masked key contributes exactly "
    "nothing even when its logit is hugely positive and the visible ones hugely negative "
    "(a finite mask such as -1e4 or -1e9 fails)",
    needs=("attention",),
)
def attn_causal_no_future(t: Target, data: st.DataObject) -> None:
    shapes = data.draw(attn_cases(causal=True, min_Tq=2, preset=t.preset), label="shapes")
    for shape in shapes:
        check = data.draw(st.sampled_from(("hostile", "perturb", "perturb")), label="check")
        if check == "hostile":
            check_hostile_mask(t, data, shape)
        else:
            check_future_replaced(t, data, shape)


def check_future_replaced(t: Target, data: st.DataObject, shape: AttnShape) -> None:
    """Replace the future of the first queries; their outputs must not move."""
    offset = shape.Tk - shape.Tq
    rows = data.draw(st.integers(1, shape.Tq - 1), label="queries checked")
    cut = rows + offset  # query rows-1 sees keys < cut; keys cut.. are its future
    q, k, v = draw_qkv(t, data, shape)
    rng = np.random.default_rng(data.draw(seeds(), label="perturbation seed"))
    k2, v2 = k.copy(), v.copy()
    k2[:, :, cut:] = normal(rng, k2[:, :, cut:].shape)  # (B, Hkv, Tk - cut, D)
    v2[:, :, cut:] = normal(rng, v2[:, :, cut:].shape, LEAK_SCALE)  # (B, Hkv, Tk - cut, Dv)
    k2, v2 = t.inputs(k2, v2)
    before = attend(t, shape, q, k, v, causal=True)[:, :, :rows]  # (B, Hq, rows, Dv)
    after = attend(t, shape, q, k2, v2, causal=True)[:, :, :rows]  # (B, Hq, rows, Dv)
    what = t.where(
        f"attention(q{shape.q}, k{shape.k}, v{shape.v}, causal=True): queries 0..{rows - 1} "
        f"changed when keys/values {cut}..{shape.Tk - 1} (in their future) were replaced"
    )
    seen = (q[:, :, :rows], k[:, :, :cut], np.abs(v[:, :, :cut]))  # what queries 0..rows-1 see
    magnitude = float(np.linalg.norm(ref.attention(*seen, causal=True)))
    assert_close(after, before, dtype=t.dtype, n=reduction(shape), magnitude=magnitude, what=what)


def check_hostile_mask(t: Target, data: st.DataObject, shape: AttnShape) -> None:
    """Logits exactly -L for the keys every query sees and +L for the rest (q = e_0, k = -+e_0,
    scale L): query 0 must average the values it sees, with ties, and nothing of its future."""
    L = data.draw(hostile_logits(t.dtype), label="hostile logit size L")
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    seen = shape.Tk - shape.Tq + 1  # keys 0..seen-1 are visible to every query
    q = np.zeros(shape.q)  # (B, Hq, Tq, D)
    q[..., 0] = 1.0
    k = normal(rng, shape.k)  # (B, Hkv, Tk, D); only feature 0 meets q
    k[..., :seen, 0], k[..., seen:, 0] = -1.0, 1.0
    v = normal(rng, shape.v)  # (B, Hkv, Tk, Dv)
    q, k, v = t.inputs(q, k, v)
    out = attend(t, shape, q, k, v, causal=True, scale=L)
    what = t.where(
        f"attention(q{shape.q}, k{shape.k}, v{shape.v}, causal=True, scale={L:g}): visible "
        f"logits -{L:g} (exact ties), masked logits +{L:g}; a masked key must weigh exactly 0"
    )
    compare_with_reference(t, shape, out, q, k, v, causal=True, scale=L, what=what, ties=True)


ACCURATE_LOGIT_ERROR = 0.05  # the softmax-weight error u*L that a large-logit comparison allows


def check_large_logits(
    t: Target, data: st.DataObject, shape: AttnShape, causal: bool, run: Any, text: str
) -> None:
    """The check behind ATTN-STABLE and FLASH-STABLE; `run(q, k, v, scale)` calls the op.

    Logits up to 1e5 must give finite outputs inside the range of the visible values
    (no overflow: the max is subtracted). A logit of size L stored with unit roundoff u moves
    its softmax weight by about u*L, so the comparison with the reference uses logits as large
    as the dtype keeps to ACCURATE_LOGIT_ERROR: the drawn size in float32, about 100 in float16
    and 13 in bfloat16. Raw scores are drawn tiny as well as normal, so a kernel that scales q
    before the matmul in half precision overflows where it should not.
    """
    raw_size = data.draw(st.sampled_from([1.0, 1e-2]), label="q, k size")
    q, k, v = draw_qkv(t, data, shape, qk_scale=raw_size)
    raw = max(float(np.max(np.abs(ref.logits(q, k)))), 1e-30)
    big = data.draw(logit_sizes(t.dtype), label="logit size")
    out = run(q, k, v, big / raw)
    where = t.where(f"{text}, scale={big / raw:.4g}: logits up to {big:.0f}")
    assert_close(
        out,
        ref.attention(q, k, v, causal=causal, scale=big / raw),
        dtype=t.dtype,
        n=reduction(shape),
        tol=np.inf,
        what=where,
    )  # finite where the reference is
    check_inside_values(t, shape, v, out, causal=causal, what=where)
    u = UNIT_ROUNDOFF[t.dtype]
    size = min(big, ACCURATE_LOGIT_ERROR / u)
    scale = size / raw
    if size != big:
        out = run(q, k, v, scale)
    expected, magnitude = ref.attention_and_magnitude(q, k, v, causal=causal, scale=scale)
    baseline = ref.attention(q, k, v, causal=causal, scale=scale, precision=t.dtype)
    typical = logit_error(t.dtype, q, k, v, causal=causal, scale=scale)
    tol = max(
        budget(t.dtype, reduction(shape), expected, baseline, magnitude, typical), 4 * u * size
    )
    assert_close(
        out,
        expected,
        dtype=t.dtype,
        n=reduction(shape),
        tol=tol,
        magnitude=magnitude,
        what=t.where(f"{text}, scale={scale:.4g}: logits up to {size:.4g}"),
    )


@clause(
    "ATTN-STABLE",
    "logits from 1e-3 up to 1e5 in size give finite outputs within the visible values "
    "(max-subtraction), and large logits give the reference's output",
    needs=("attention",),
)
def attn_stable(t: Target, data: st.DataObject) -> None:
    causal = data.draw(st.booleans(), label="causal")
    for shape in data.draw(attn_cases(causal=causal, max_T=24, preset=t.preset), label="shapes"):
        text = f"attention(q{shape.q}, k{shape.k}, v{shape.v}, causal={causal})"
        run = partial(stable_call, t, shape, causal)
        check_large_logits(t, data, shape, causal, run, text)


def stable_call(
    t: Target, shape: AttnShape, causal: bool, q: np.ndarray, k: np.ndarray, v: np.ndarray, scale
) -> np.ndarray:
    """One attention call of ATTN-STABLE."""
    return attend(t, shape, q, k, v, causal=causal, scale=scale)


@clause(
    "ATTN-CONVEX",
    "every output row lies inside the bounding box of the value rows its query can see",
    needs=("attention",),
)
def attn_convex(t: Target, data: st.DataObject) -> None:
    causal = data.draw(st.booleans(), label="causal")
    shapes = attn_cases(causal=causal, preset=t.preset, longest=True)
    for shape in data.draw(shapes, label="shapes"):
        q, k, v = draw_qkv(t, data, shape, qk_scale=2.0)
        out = attend(t, shape, q, k, v, causal=causal)  # (B, Hq, Tq, Dv)
        what = t.where(f"attention(q{shape.q}, k{shape.k}, v{shape.v}, causal={causal})")
        check_inside_values(t, shape, v, out, causal=causal, what=what)


def check_inside_values(
    t: Target, shape: AttnShape, v: np.ndarray, out: np.ndarray, *, causal: bool, what: str
) -> None:
    """Fail unless each output row lies within the per-coordinate range of its visible values."""
    __tracebackhide__ = True
    if causal:  # query i sees keys 0..i + Tk - Tq: a running min / max, read at its last key
        last = np.arange(shape.Tq) + (shape.Tk - shape.Tq)  # (Tq,)
        lo = np.minimum.accumulate(v, axis=2)[:, :, last]  # (B, Hkv, Tq, Dv)
        hi = np.maximum.accumulate(v, axis=2)[:, :, last]  # (B, Hkv, Tq, Dv)
    else:
        lo = np.broadcast_to(v.min(axis=2, keepdims=True), (*v.shape[:2], shape.Tq, shape.Dv))
        hi = np.broadcast_to(v.max(axis=2, keepdims=True), (*v.shape[:2], shape.Tq, shape.Dv))
    lo, hi = ref.expand_kv(lo, shape.Hq), ref.expand_kv(hi, shape.Hq)  # (B, Hq, Tq, Dv)
    slack = floor(t.dtype, reduction(shape)) * np.max(np.abs(v))
    outside = np.maximum(lo - slack - out, out - hi - slack)
    if not np.all(np.nan_to_num(outside, nan=np.inf) <= 0):
        where = tuple(int(i) for i in np.unravel_index(int(np.nanargmax(outside)), outside.shape))
        raise ClauseFailure(
            f"output {out[where]:.6g} at index {where} lies outside the visible values' range "
            f"[{lo[where]:.6g}, {hi[where]:.6g}] (slack {slack:.3g})\n  in {what}",
            index=list(where),
            call=what,
        )


@clause(
    "ATTN-PERMUTE",
    "without a causal mask, permuting key/value pairs together leaves the output unchanged",
    needs=("attention",),
)
def attn_permute(t: Target, data: st.DataObject) -> None:
    shapes = attn_cases(min_Tk=2, preset=t.preset, longest=True)
    for shape in data.draw(shapes, label="shapes"):
        q, k, v = draw_qkv(t, data, shape)
        if shape.Tk <= 64:
            perm = np.array(data.draw(st.permutations(range(shape.Tk)), label="key permutation"))
            shown = str(perm.tolist())
        else:  # thousands of keys: a seeded permutation (a drawn one takes thousands of draws)
            seed = data.draw(seeds(), label="permutation seed")
            perm = np.random.default_rng(seed).permutation(shape.Tk)
            shown = f"np.random.default_rng({seed}).permutation({shape.Tk})"
        out = attend(t, shape, q, k, v, causal=False)
        permuted = attend(t, shape, q, k[:, :, perm], v[:, :, perm], causal=False)
        what = t.where(
            f"attention(q{shape.q}, k{shape.k}, v{shape.v}, causal=False) with keys permuted "
            f"by {shown}"
        )
        compare_pair(t, shape, permuted, out, q, k, v, causal=False, what=what)


@clause(
    "ATTN-BATCH-INDEP",
    "each batch row's output equals the output of that row computed alone",
    needs=("attention",),
)
def attn_batch_indep(t: Target, data: st.DataObject) -> None:
    causal = data.draw(st.booleans(), label="causal")
    for shape in data.draw(attn_cases(causal=causal, preset=t.preset), label="shapes"):
        q, k, v = draw_qkv(t, data, shape)
        together = attend(t, shape, q, k, v, causal=causal)
        b = shape.B - 1 - data.draw(st.integers(0, shape.B - 1), label="rows before the last")
        alone_shape = AttnShape(1, shape.Hq, shape.Hkv, shape.Tq, shape.Tk, shape.D, shape.Dv)
        qb, kb, vb = q[b : b + 1], k[b : b + 1], v[b : b + 1]
        alone = attend(t, alone_shape, qb, kb, vb, causal=causal)
        what = t.where(f"attention batch row {b} of q{shape.q} vs the same row alone")
        row = together[b : b + 1]
        compare_pair(t, alone_shape, row, alone, qb, kb, vb, causal=causal, what=what)
