"""Clauses for the attention options: a sliding window and logit soft-capping.

`window` w: the query at absolute position p (bottom-right aligned, p = i + Tk - Tq) sees keys
j > p - w; with causal=True that is (p - w, p], flash-attn's window_size=(w - 1, 0) (Mistral,
Gemma 2). `softcap` c: the scaled logits s become c·tanh(s / c) before the mask (Gemma 2),
so a masked key keeps weight 0. Both apply to `attention` and `tiled_attention`; an
implementation declares them in `options = {"window", "softcap"}` (else these clauses skip).
Both are drawn on short shapes and on a few queries over a cache past 2048 keys (a split-KV
decode path that forgets an option is a real bug), inside the implementation's declared limits
(attnspec.specs.limits): head dims, causal-only ops, and the non-causal window convention it declares
(left, symmetric, or none: then a window is drawn on causal calls only). A query that a
symmetric window leaves without a key is compared as attnspec.specs.varlen says.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from hypothesis import strategies as st

from attnspec.specs import limits
from attnspec.specs.attention import (
    LEAK_SCALE,
    check_inside_values,
    draw_qkv,
    logit_error,
    reduction,
)
from attnspec.specs.clauses import clause
from attnspec.specs.dtypes import UNIT_ROUNDOFF
from attnspec.specs.reference import attention as ref
from attnspec.specs.runner import Target
from attnspec.specs.strategies import AttnShape, attn_shapes, normal, scales, seeds
from attnspec.specs.tiled import draw_blocks
from attnspec.specs.tolerance import assert_close, budget
from attnspec.specs.varlen import convention, require_option, seen_rows, softcaps, windows

LONG_CACHE = (2049, 2500)  # decode-sized queries over a cache past 2048 keys (split-KV)
SHAPE_KINDS = ("long cache", "short", "short")  # the first example, then a third, is long
LONG_HEAD_DIMS = (8, 4, 16)  # small heads keep a long case cheap
HUGE_LOGITS = 1e5


def pick_op(t: Target, data: st.DataObject) -> str:
    """attention or tiled_attention, whichever the implementation has."""
    have = [op for op in ("attention", "tiled_attention") if t.has(op)]
    return data.draw(st.sampled_from(have), label="op")


def blocks_of(data: st.DataObject, op: str, shape: AttnShape) -> dict[str, Any]:
    """block_q and block_k for tiled_attention (nothing for attention)."""
    if op == "attention":
        return {}
    block_q, block_k = draw_blocks(data, shape)
    return {"block_q": block_q, "block_k": block_k}


def draw_causal(data: st.DataObject, op: str, *, window: bool) -> bool:
    """The causal flag, inside the declared limits: causal-only ops, and (with a window) the
    non-causal window convention ("none": a windowed call is causal)."""
    lim = limits.current()
    causal = lim.causal(op, data.draw(st.booleans(), label="causal"))
    if window and not causal and not lim.noncausal_window():
        return True
    return causal


@st.composite
def option_shapes(draw: st.DrawFn, *, causal: bool, max_T: int = 40) -> AttnShape:
    """A few queries over a cache past 2048 keys (small heads), or small attention shapes; head
    dims inside the declared limits."""
    lim = limits.current()
    if draw(st.sampled_from(SHAPE_KINDS), label="shape kind") == "short":
        shape = draw(attn_shapes(causal=causal, max_T=max_T), label="shape")
        return replace(shape, D=lim.head_dim(shape.D), Dv=lim.head_dim(shape.Dv))
    Tk = draw(st.sampled_from(LONG_CACHE), label="Tk")
    Hkv = draw(st.integers(1, 2), label="Hkv")
    G = draw(st.integers(1, 4), label="Hq/Hkv")
    D = lim.head_dim(draw(st.sampled_from(LONG_HEAD_DIMS), label="D"))
    return AttnShape(1, Hkv * G, Hkv, draw(st.integers(1, 4), label="Tq"), Tk, D, D)


def run(t: Target, op: str, shape: AttnShape, q, k, v, **kwargs: Any) -> np.ndarray:
    """The implementation's output of `op`, checked for shape and dtype."""
    return t.call(op, q, k, v, expect_shape=shape.o, **kwargs)


def against_reference(
    t: Target, shape: AttnShape, out: np.ndarray, q, k, v, *, what: str, **opts: Any
) -> None:
    """The output against the float64 reference with the same options; queries that see no key
    (a symmetric non-causal window) as attnspec.specs.varlen.seen_rows says."""
    __tracebackhide__ = True
    rows = np.moveaxis(out, 2, 0)  # (Tq, B, Hq, Dv)
    seen = seen_rows(t, rows, shape.Tk, causal=opts["causal"], opts=opts, what=what)
    if not seen.any():
        return
    expected = ref.attention(q, k, v, **opts)  # (B, Hq, Tq, Dv)
    assert_close(
        np.where(seen[:, None], out, expected),  # left-out rows: as expected
        expected,
        dtype=t.dtype,
        n=reduction(shape),
        baseline=ref.attention(q, k, v, precision=t.dtype, **opts),
        magnitude=ref.magnitude(q, k, v, **opts),
        typical=logit_error(t.dtype, q, k, v, **opts),
        what=what,
    )


@clause(
    "ATTN-WINDOW",
    "with a sliding window w the query at absolute position p sees exactly the keys in "
    "(p - w, p] (causal) or after p - w: the output equals the reference, and replacing the "
    "keys outside every checked query's window leaves it unchanged (a leaked weight of 1e-3 is "
    "caught), for windows of 1, inside T, at least T, over 2049+ keys, non-causal in the "
    "declared convention",
    needs=("attention|tiled_attention",),
)
def attn_window(t: Target, data: st.DataObject) -> None:
    require_option(t, "window")
    op = pick_op(t, data)
    causal = draw_causal(data, op, window=True)
    shape = data.draw(option_shapes(causal=causal), label="shape")
    window = data.draw(windows(shape.Tk), label="window")
    blocks = blocks_of(data, op, shape)
    opts: dict[str, Any] = {"causal": causal, "scale": data.draw(scales(), label="scale")}
    opts["window"] = window
    q, k, v = draw_qkv(t, data, shape)
    out = run(t, op, shape, q, k, v, **blocks, **opts)
    text = f"{op}(q{shape.q}, k{shape.k}, v{shape.v}, {blocks}, {opts})"
    reference = convention(opts, causal=causal)
    against_reference(t, shape, out, q, k, v, what=t.where(text), **reference)
    first = data.draw(st.integers(0, shape.Tq - 1), label="first query checked")
    cut = first + shape.Tk - shape.Tq - window + 1  # keys 0..cut-1 are outside its window
    if cut < 1:
        return  # the window reaches key 0: nothing lies outside it
    rng = np.random.default_rng(data.draw(seeds(), label="perturbation seed"))
    k2, v2 = k.copy(), v.copy()
    k2[:, :, :cut] = normal(rng, k2[:, :, :cut].shape)  # (B, Hkv, cut, D)
    v2[:, :, :cut] = normal(rng, v2[:, :, :cut].shape, LEAK_SCALE)  # (B, Hkv, cut, Dv)
    k2, v2 = t.inputs(k2, v2)
    after = run(t, op, shape, q, k2, v2, **blocks, **opts)[:, :, first:]
    magnitude = ref.magnitude(q, k, v, **reference)
    assert_close(
        after,
        out[:, :, first:],
        dtype=t.dtype,
        n=reduction(shape),
        magnitude=magnitude,
        what=t.where(
            f"{text}: queries {first}.. changed when keys 0..{cut - 1} (outside their window) "
            "were replaced"
        ),
    )


def capped_logit_error(
    dtype: str, q: np.ndarray, k: np.ndarray, *, causal: bool, scale: float, softcap: float
) -> float:
    """The output error (relative to the values' size) that rounding the capped logits in a
    working dtype typically causes: each logit's error is u times the root-sum-square of its
    products times the scale (a cancelling sum keeps it), through the cap's slope sech²(s/c),
    weighted by the float64 softmax weight it moves. At logits of 1e5 a plain computation that
    happens to round luckily must not set the budget alone (a thorough-tier false alarm)."""
    B, Hq, Tq, _ = q.shape
    size = np.sqrt(ref.logits(q * q, k * k)) * scale  # (B, Hq, Tq, Tk)
    s = ref.logits(q, k) * scale  # (B, Hq, Tq, Tk)
    slope = 1.0 / np.cosh(np.minimum(np.abs(s) / softcap, 350.0)) ** 2  # (B, Hq, Tq, Tk)
    p = ref.weights(q, k, causal=causal, scale=scale, softcap=softcap)  # (B, Hkv, G, Tq, Tk)
    moved = p.reshape(B, Hq, Tq, -1) * size * slope  # (B, Hq, Tq, Tk)
    return float(2 * UNIT_ROUNDOFF[dtype] * np.max(moved.sum(axis=-1)))


@clause(
    "ATTN-SOFTCAP",
    "with softcap c the scaled logits become c·tanh(s/c) before the mask: the output equals "
    "the reference, and logits of 1e5 give finite outputs inside the visible values, also "
    "over 2049+ keys",
    needs=("attention|tiled_attention",),
)
def attn_softcap(t: Target, data: st.DataObject) -> None:
    require_option(t, "softcap")
    op = pick_op(t, data)
    causal = draw_causal(data, op, window=False)
    shape = data.draw(option_shapes(causal=causal, max_T=24), label="shape")
    cap = data.draw(softcaps(), label="softcap")
    blocks = blocks_of(data, op, shape)
    scale = data.draw(scales(), label="scale")
    q, k, v = draw_qkv(
        t, data, shape, qk_scale=data.draw(st.sampled_from([1.0, 3.0]), label="q, k size")
    )
    opts: dict[str, Any] = {"causal": causal, "softcap": cap}
    out = run(t, op, shape, q, k, v, scale=scale, **blocks, **opts)
    text = f"{op}(q{shape.q}, k{shape.k}, v{shape.v}, {blocks}, {opts}"
    against_reference(
        t, shape, out, q, k, v, scale=scale, what=t.where(f"{text}, scale={scale})"), **opts
    )
    big = HUGE_LOGITS / max(float(np.max(np.abs(ref.logits(q, k)))), 1e-30)
    out = run(t, op, shape, q, k, v, scale=big, **blocks, **opts)
    what = t.where(f"{text}, scale={big:.4g}): logits up to {HUGE_LOGITS:g}")
    expected = ref.attention(q, k, v, scale=big, **opts)
    n = reduction(shape)
    assert_close(out, expected, dtype=t.dtype, n=n, tol=np.inf, what=what)  # finite
    check_inside_values(t, shape, v, out, causal=causal, what=what)
    with np.errstate(over="ignore", invalid="ignore"):  # a float16 baseline overflows at 1e5
        baseline = ref.attention(q, k, v, scale=big, precision=t.dtype, **opts)
    magnitude = ref.magnitude(q, k, v, scale=big, **opts)
    tol = max(
        budget(t.dtype, reduction(shape), expected, baseline, magnitude),
        4 * capped_logit_error(t.dtype, q, k, causal=causal, scale=big, softcap=cap),
    )
    assert_close(
        out, expected, dtype=t.dtype, n=reduction(shape), tol=tol, magnitude=magnitude, what=what
    )
