"""Tiled (FlashAttention-style) attention clauses: block-wise online softmax equals attention.

Source of the method: Dao et al., "FlashAttention" (NeurIPS 2022), Algorithm 1. Block sizes
are drawn as 1, as sizes that need not divide T, and as sizes larger than T.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from hypothesis import strategies as st

from attnspec.specs.attention import (
    check_large_logits,
    compare_with_reference,
    draw_qkv,
    logit_error,
    reduction,
)
from attnspec.specs.clauses import clause
from attnspec.specs.reference import attention as ref
from attnspec.specs.runner import NotImplementedByImpl, Target, call_text
from attnspec.specs.strategies import AttnShape, attn_cases, block_sizes, scales
from attnspec.specs.tolerance import assert_close


def draw_blocks(data: st.DataObject, shape: AttnShape) -> tuple[int, int]:
    """block_q and block_k for `shape`: kernel tile sizes (16 ... 128) over thousands of keys."""
    real = shape.Tk > 64
    block_q = data.draw(block_sizes(shape.Tq, real=real), label="block_q")
    block_k = data.draw(block_sizes(shape.Tk, real=real), label="block_k")
    return block_q, block_k


def tiled(
    t: Target, shape: AttnShape, q: np.ndarray, k: np.ndarray, v: np.ndarray, **kwargs: Any
) -> np.ndarray:
    """The implementation's tiled attention output, checked for shape and dtype."""
    return t.call("tiled_attention", q, k, v, expect_shape=shape.o, **kwargs)


def supports_lse(t: Target) -> bool:
    """Whether tiled_attention accepts return_lse (by name or through **kwargs)."""
    try:
        params = inspect.signature(t.impl.tiled_attention).parameters.values()
    except (TypeError, ValueError):
        return True  # no signature to read: try it
    return any(p.name == "return_lse" or p.kind is p.VAR_KEYWORD for p in params)


@clause(
    "FLASH-EQ-ATTN",
    "tiled attention equals the float64 attention reference for any block sizes (1, sizes "
    "that do not divide T, sizes larger than T), causal or not, with GQA/MQA",
    needs=("tiled_attention",),
)
def flash_eq_attn(t: Target, data: st.DataObject) -> None:
    causal = data.draw(st.booleans(), label="causal")
    shapes = data.draw(attn_cases(causal=causal, preset=t.preset), label="shapes")
    blocks = [draw_blocks(data, shape) for shape in shapes]
    scale = data.draw(scales(), label="scale")
    # Each shape twice, interleaved, with fresh inputs every call (stale results, workspaces).
    calls = list(zip(shapes, blocks, strict=True)) * 2
    for n, (s, (block_q, block_k)) in enumerate(calls):
        q, k, v = draw_qkv(t, data, s, stream=n)
        kwargs = {"causal": causal, "scale": scale, "block_q": block_q, "block_k": block_k}
        out = tiled(t, s, q, k, v, **kwargs)
        what = t.where(
            f"call {n + 1} of {len(calls)} (shapes {' / '.join(str(c.q) for c, _ in calls)}, "
            f"fresh inputs each): tiled_attention(q{s.q}, k{s.k}, v{s.v}, causal={causal}, "
            f"scale={scale}, block_q={block_q}, block_k={block_k})"
        )
        compare_with_reference(t, s, out, q, k, v, causal=causal, scale=scale, what=what)


@clause(
    "FLASH-LSE",
    "with return_lse=True, tiled attention also returns the log-sum-exp of each query's "
    "scaled, masked logits (B, Hq, Tq), equal to the float64 reference",
    needs=("tiled_attention",),
)
def flash_lse(t: Target, data: st.DataObject) -> None:
    if not supports_lse(t):
        raise NotImplementedByImpl(f"{t.name}'s tiled_attention does not support return_lse")
    causal = data.draw(st.booleans(), label="causal")
    shapes = attn_cases(causal=causal, preset=t.preset, longest=True)
    for shape in data.draw(shapes, label="shapes"):
        check_lse(t, data, shape, causal)


def check_lse(t: Target, data: st.DataObject, shape: AttnShape, causal: bool) -> None:
    """One FLASH-LSE call: the output and the log-sum-exp against their references."""
    block_q, block_k = draw_blocks(data, shape)
    scale = data.draw(scales(), label="scale")
    q, k, v = draw_qkv(t, data, shape)
    kwargs = {"causal": causal, "scale": scale, "block_q": block_q, "block_k": block_k}
    natives = tuple(t.native(x) for x in (q, k, v))
    text = call_text("tiled_attention", natives, {**kwargs, "return_lse": True})
    before = [t.numpy(x) for x in natives]
    out = t.call_pair(text, "o, lse", t.impl.tiled_attention, *natives, return_lse=True, **kwargs)
    t.unchanged(natives, before, text)
    o = t.result(out[0], text, shape.o)
    lse = t.numpy(out[1], text)
    expected = ref.log_sum_exp(q, k, causal=causal, scale=scale)
    baseline = ref.log_sum_exp(q, k, causal=causal, scale=scale, precision=t.dtype)
    assert_close(
        lse,
        expected,
        dtype=t.dtype,
        n=reduction(shape),
        baseline=baseline,
        what=t.where(f"the lse (B, Hq, Tq) of {text}"),
    )
    expected_o = ref.attention(q, k, v, causal=causal, scale=scale)
    baseline_o = ref.attention(q, k, v, causal=causal, scale=scale, precision=t.dtype)
    assert_close(
        o,
        expected_o,
        dtype=t.dtype,
        n=reduction(shape),
        baseline=baseline_o,
        typical=logit_error(t.dtype, q, k, v, causal=causal, scale=scale),
        what=t.where(f"the output of {text}"),
    )


@clause(
    "FLASH-STABLE",
    "logits from 1e-3 up to 1e5 in size, spread over many key blocks, give finite outputs "
    "within the visible values (the running max is subtracted), and large logits give the reference's output",
    needs=("tiled_attention",),
)
def flash_stable(t: Target, data: st.DataObject) -> None:
    causal = data.draw(st.booleans(), label="causal")
    for shape in data.draw(attn_cases(causal=causal, max_T=24, preset=t.preset), label="shapes"):
        check_stable(t, data, shape, causal)


def check_stable(t: Target, data: st.DataObject, shape: AttnShape, causal: bool) -> None:
    """One FLASH-STABLE case: small blocks, or kernel tile sizes over thousands of keys."""
    if shape.Tk > 64:
        block_q, block_k = draw_blocks(data, shape)
    else:
        block_q = data.draw(st.integers(1, max(shape.Tq // 2, 1)), label="block_q")
        block_k = data.draw(st.integers(1, max(shape.Tk // 2, 1)), label="block_k")

    def run(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
        return tiled(
            t, shape, q, k, v, causal=causal, scale=scale, block_q=block_q, block_k=block_k
        )

    text = (
        f"tiled_attention(q{shape.q}, k{shape.k}, v{shape.v}, causal={causal}, "
        f"block_q={block_q}, block_k={block_k})"
    )
    check_large_logits(t, data, shape, causal, run, text)
