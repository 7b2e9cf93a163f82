"""Float64 references for partial attention states: the log-sum-exp of the logits with every
option, and the merge of two states.

A partial state of some queries over a key set is its output o and lse = log sum_j e^(s_j),
the natural log of the sum of exponentials of the scaled, soft-capped, masked and windowed
logits s_j (flash-attn's softmax_lse, vLLM's merge_attn_states convention; FlashInfer's is
base 2). A query that sees no key has lse = -inf and output 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnspec.specs.dtypes import UNIT_ROUNDOFF, WORK, stored
from attnspec.specs.reference import attention as ref
from attnspec.specs.reference.serving import dense

LSE_DTYPE = {"float64": "float64"}  # others: float32 (the dtype kernels return the lse in)


def lse_dtype(dtype: str) -> str:
    """The dtype an implementation's lse comes in and a merge takes: float32, float64 for float64."""
    return LSE_DTYPE.get(dtype, "float32")


def log_sum_exp(
    q: np.ndarray, k: np.ndarray, *, precision: str = "float64", **opts: Any
) -> np.ndarray:
    """log sum_j exp(s_j) over the visible keys (B, Hq, Tq), -inf where none is; `opts` are
    those of attnspec.specs.reference.attention.scores (causal, scale, window, softcap, window_kind). In
    a working `precision`: the plain max-subtracted computation, every stored value rounded."""
    work, rnd = WORK[precision], stored(precision)
    B, Hq, Tq, _ = q.shape
    if k.shape[2] == 0:
        return np.full((B, Hq, Tq), -np.inf)
    s = ref.scores(q, k, precision=precision, **opts)  # (B, Hkv, G, Tq, Tk)
    m = np.max(s, axis=-1)  # (B, Hkv, G, Tq)
    m_safe: np.ndarray = np.where(np.isfinite(m), m, 0).astype(work)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        total = rnd(np.exp(s - m_safe[..., None]).sum(axis=-1))  # (B, Hkv, G, Tq)
        lse = rnd(m_safe + np.log(total))  # (B, Hkv, G, Tq)
    return lse.reshape(B, Hq, Tq).astype(np.float64)


def sequence_lse(q: np.ndarray, k: np.ndarray, **opts: Any) -> np.ndarray:
    """One packed sequence's lse (Tq, Hq) for q (Tq, Hq, D) over k (Tk, Hkv, D)."""
    return log_sum_exp(dense(q), dense(k), **opts)[0].T  # (Tq, Hq)


def lse_rounding(dtype: str, q: np.ndarray, k: np.ndarray, **opts: Any) -> np.ndarray:
    """The typical absolute lse error (B, Hq, Tq) that rounding the logits in `dtype` causes:
    d lse = sum_j p_j d(cap(s_j)), and a logit computed as a dot product is off by about u times
    the root-sum-square of its products times the scale, through the cap's slope sech²(s/c) (the
    output's version is attnspec.specs.attention_options.capped_logit_error). `opts`: causal, scale,
    window, softcap, window_kind."""
    B, Hq, Tq, D = q.shape
    if k.shape[2] == 0:
        return np.zeros((B, Hq, Tq))
    scale = opts.get("scale")
    sc = 1.0 / np.sqrt(D) if scale is None else scale
    size = np.sqrt(ref.logits(q * q, k * k)) * sc  # (B, Hq, Tq, Tk)
    cap = opts.get("softcap")
    slope = 1.0
    if cap is not None:
        s = ref.logits(q, k) * sc  # (B, Hq, Tq, Tk)
        slope = 1.0 / np.cosh(np.minimum(np.abs(s) / cap, 350.0)) ** 2
    p = ref.weights(q, k, **opts).reshape(B, Hq, Tq, -1)  # (B, Hq, Tq, Tk)
    return 2 * UNIT_ROUNDOFF[dtype] * (p * size * slope).sum(axis=-1)


def sequence_lse_rounding(dtype: str, q: np.ndarray, k: np.ndarray, **opts: Any) -> np.ndarray:
    """lse_rounding of one packed sequence (Tq, Hq)."""
    return lse_rounding(dtype, dense(q), dense(k), **opts)[0].T


def merge_states(
    o_a: np.ndarray, lse_a: np.ndarray, o_b: np.ndarray, lse_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The float64 merge of two states (T, H, Dv), (T, H): lse = logaddexp, o the weighted sum;
    an empty side weighs 0, two empty sides give (0, -inf)."""
    lse = np.logaddexp(lse_a, lse_b)  # (T, H)
    seen = np.isfinite(lse)
    with np.errstate(invalid="ignore"):
        wa = np.where(seen & np.isfinite(lse_a), np.exp(lse_a - np.where(seen, lse, 0)), 0.0)
        wb = np.where(seen & np.isfinite(lse_b), np.exp(lse_b - np.where(seen, lse, 0)), 0.0)
    o = np.where(wa[..., None] > 0, wa[..., None] * o_a, 0) + np.where(
        wb[..., None] > 0, wb[..., None] * o_b, 0
    )
    return o, lse
