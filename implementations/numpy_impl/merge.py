"""Merging two partial attention states by their log-sum-exp (vLLM's merge_attn_states,
FlashInfer's merge_state): the composition step of split-KV decoding, chunked prefill over a
cached context and cascade attention.

State a is the attention of some queries over key set A: output o_a (T, H, Dv) and natural-log
lse_a (T, H). Over A ∪ B (disjoint): lse = log(e^lse_a + e^lse_b) and
o = w_a o_a + w_b o_b with w_x = e^(lse_x - lse). Computed from m = max(lse_a, lse_b) so
nothing overflows; an empty side (lse -inf) gets weight 0 whatever its output slot holds, and
two empty sides give (0, -inf), never -inf - (-inf) = NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def check_states(o_a: Any, lse_a: Any, o_b: Any, lse_b: Any) -> None:
    """o_a, o_b (T, H, Dv) and lse_a, lse_b (T, H), the same shapes on both sides."""
    if o_a.ndim != 3 or tuple(o_a.shape) != tuple(o_b.shape):
        raise ValueError(
            f"o_a and o_b must both be (T, H, Dv); got {tuple(o_a.shape)}, {tuple(o_b.shape)}"
        )
    want = tuple(o_a.shape[:2])
    if tuple(lse_a.shape) != want or tuple(lse_b.shape) != want:
        raise ValueError(
            f"lse_a and lse_b must be {want} (T, H); got {tuple(lse_a.shape)}, {tuple(lse_b.shape)}"
        )


def merge_attention_states(
    o_a: np.ndarray, lse_a: np.ndarray, o_b: np.ndarray, lse_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(o, lse) of the union of the two states' key sets: o (T, H, Dv) in o_a's dtype, lse (T, H)
    in float32 (float64 for float64 outputs)."""
    check_states(o_a, lse_a, o_b, lse_b)
    wd = np.dtype(np.float64 if o_a.dtype == np.float64 else np.float32)
    la: np.ndarray = lse_a.astype(wd)  # (T, H)
    lb: np.ndarray = lse_b.astype(wd)  # (T, H)
    m = np.maximum(la, lb)  # (T, H)
    m_safe: np.ndarray = np.where(np.isfinite(m), m, 0).astype(wd)  # both empty: weights e^-inf = 0
    wa, wb = np.exp(la - m_safe), np.exp(lb - m_safe)  # (T, H), in [0, 1]
    total = wa + wb  # (T, H), 0 only when both sides are empty
    seen = total > 0
    denom = np.where(seen, total, 1).astype(wd)
    # A side of weight 0 contributes exactly 0, even if its output slot holds NaN or Inf.
    ca = np.where(wa > 0, wa / denom, 0)[..., None] * np.where(wa[..., None] > 0, o_a, 0)
    cb = np.where(wb > 0, wb / denom, 0)[..., None] * np.where(wb[..., None] > 0, o_b, 0)
    o = (ca.astype(wd) + cb.astype(wd)).astype(o_a.dtype)  # (T, H, Dv)
    with np.errstate(divide="ignore"):
        lse = np.where(seen, m_safe + np.log(denom), -np.inf).astype(wd)  # (T, H)
    return o, lse
