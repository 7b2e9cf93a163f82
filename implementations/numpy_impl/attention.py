"""Softmax attention in numpy: the readable path, float64 capable."""

from __future__ import annotations

import numpy as np

from attnspec.implementations.numpy_impl.masking import restrict
from attnspec.implementations.validate import check_attention_shapes


def work_dtype(x: np.ndarray) -> np.dtype:
    """Accumulate half precision in float32, float32 in float32, float64 in float64."""
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)


def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool,
    scale: float | None = None,
    window: int | None = None,
    softcap: float | None = None,
    return_lse: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """softmax(q k^T * scale, bottom-right causal mask) v with GQA; rows that see no key give 0.
    With return_lse, also the log-sum-exp (B, Hq, Tq) of `attention_lse`."""
    o, lse = attention_lse(q, k, v, causal=causal, scale=scale, window=window, softcap=softcap)
    return (o, lse) if return_lse else o


def attention_lse(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool,
    scale: float | None = None,
    window: int | None = None,
    softcap: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The output (B, Hq, Tq, Dv) and the natural-log log-sum-exp of each query's scaled, capped,
    masked logits (B, Hq, Tq), in float32 (float64 for float64 inputs); a row that sees no key
    gives 0 and -inf."""
    B, Hq, Tq, D, Hkv, Tk, Dv = check_attention_shapes(q, k, v, causal=causal)
    wd = work_dtype(q)
    if Tk == 0:  # no key at all: every row is empty
        return np.zeros((B, Hq, Tq, Dv), q.dtype), np.full((B, Hq, Tq), -np.inf, wd)
    scale = 1.0 / np.sqrt(D) if scale is None else float(scale)
    qg = q.astype(wd).reshape(B, Hkv, Hq // Hkv * Tq, D)  # (B, Hkv, G*Tq, D)
    s = (qg @ k.astype(wd).transpose(0, 1, 3, 2)) * wd.type(scale)  # (B, Hkv, G*Tq, Tk)
    s = s.reshape(B, Hkv, Hq // Hkv, Tq, Tk)  # (B, Hkv, G, Tq, Tk)
    qpos = np.arange(Tq) + (Tk - Tq)  # (Tq,) absolute positions, bottom-right aligned
    s = restrict(s, qpos, np.arange(Tk), causal=causal, window=window, softcap=softcap)
    m = np.max(s, axis=-1, keepdims=True)  # (B, Hkv, G, Tq, 1)
    p = np.exp(s - np.where(np.isfinite(m), m, 0))  # (B, Hkv, G, Tq, Tk)
    denom = p.sum(axis=-1, keepdims=True)  # (B, Hkv, G, Tq, 1)
    p = p / np.where(denom > 0, denom, 1)
    o = p.reshape(B, Hkv, Hq // Hkv * Tq, Tk) @ v.astype(wd)  # (B, Hkv, G*Tq, Dv)
    o = o.reshape(B, Hq, Tq, Dv).astype(q.dtype)  # (B, Hq, Tq, Dv)
    with np.errstate(divide="ignore"):  # log(0) = -inf: a row that sees no key
        lse = np.where(np.isfinite(m), m, 0)[..., 0] + np.log(denom[..., 0])  # (B, Hkv, G, Tq)
    return o, lse.reshape(B, Hq, Tq)  # (B, Hq, Tq)
