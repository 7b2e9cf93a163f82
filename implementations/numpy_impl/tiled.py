"""FlashAttention-style tiled attention in numpy: online softmax over key blocks.

Dao et al., "FlashAttention" (NeurIPS 2022), Algorithm 1: for each query block, walk the
key blocks keeping a running max m, running sum l and unnormalised accumulator acc; when
the max grows, rescale l and acc by exp(m_old - m_new). Causal masks are bottom-right
aligned (query i sees key j iff j <= i + Tk - Tq); key blocks entirely in a query
block's future are skipped. Rows that see no key (only when Tk < Tq) output 0 and have
lse = -inf. GQA: query heads are grouped per kv head by a reshape, so K/V are never
repeated. Computation runs in the input dtype (float32 for float16 inputs).
"""

from __future__ import annotations

import math

import numpy as np

from attnspec.implementations.numpy_impl.masking import restrict
from attnspec.implementations.validate import check_attention_shapes, check_positive


def _last_visible_key(q_end: int, tq: int, tk: int, causal: bool) -> int:
    """Exclusive end of the keys any query row in [.., q_end) may see."""
    return min(tk, q_end + tk - tq) if causal else tk


def _block_step(
    m: np.ndarray, l: np.ndarray, acc: np.ndarray, s: np.ndarray, vb: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One online-softmax update with masked logits s (-inf where hidden)."""
    m_new = np.maximum(m, s.max(axis=-1))  # (B, Hkv, G, bq)
    m_safe = np.where(np.isfinite(m_new), m_new, 0.0)  # (B, Hkv, G, bq)
    p = np.exp(s - m_safe[..., None])  # (B, Hkv, G, bq, bk)
    alpha = np.exp(m - m_safe)  # (B, Hkv, G, bq)
    l = alpha * l + p.sum(axis=-1)  # (B, Hkv, G, bq)
    acc = alpha[..., None] * acc + p @ vb  # (B, Hkv, G, bq, Dv)
    return m_new, l, acc


def tiled_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool,
    scale: float | None = None,
    block_q: int,
    block_k: int,
    return_lse: bool = False,
    window: int | None = None,
    softcap: float | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """softmax(scale q k^T + mask) v computed block by block; optionally also lse (B, Hq, Tq)."""
    b, hq, tq, d, hkv, tk, dv = check_attention_shapes(q, k, v, causal=causal)
    check_positive(block_q=block_q, block_k=block_k)
    g = hq // hkv
    dt = np.result_type(q.dtype, np.float32)
    sc = 1.0 / math.sqrt(d) if scale is None else float(scale)
    qg = q.astype(dt).reshape(b, hkv, g, tq, d)  # (B, Hkv, G, Tq, D)
    kt = np.swapaxes(k.astype(dt), -1, -2)[:, :, None]  # (B, Hkv, 1, D, Tk)
    vv = v.astype(dt)[:, :, None]  # (B, Hkv, 1, Tk, Dv)
    o = np.zeros((b, hkv, g, tq, dv), dt)  # (B, Hkv, G, Tq, Dv)
    lse = np.full((b, hkv, g, tq), -np.inf, dt)  # (B, Hkv, G, Tq)
    for q0 in range(0, tq, block_q):
        q1 = min(q0 + block_q, tq)
        qi = np.arange(q0, q1)  # (bq,)
        m = np.full((b, hkv, g, q1 - q0), -np.inf, dt)  # (B, Hkv, G, bq)
        l = np.zeros((b, hkv, g, q1 - q0), dt)  # (B, Hkv, G, bq)
        acc = np.zeros((b, hkv, g, q1 - q0, dv), dt)  # (B, Hkv, G, bq, Dv)
        for k0 in range(0, _last_visible_key(q1, tq, tk, causal), block_k):
            k1 = min(k0 + block_k, tk)
            s = (qg[..., q0:q1, :] @ kt[..., k0:k1]) * sc  # (B, Hkv, G, bq, bk)
            qpos, kpos = qi + (tk - tq), np.arange(k0, k1)  # (bq,), (bk,) absolute positions
            s = restrict(s, qpos, kpos, causal=causal, window=window, softcap=softcap)
            m, l, acc = _block_step(m, l, acc, s, vv[..., k0:k1, :])
        seen = l > 0  # (B, Hkv, G, bq)
        o[..., q0:q1, :] = np.where(seen[..., None], acc / np.where(seen, l, 1.0)[..., None], 0.0)
        lse[..., q0:q1] = np.where(seen, m + np.log(np.where(seen, l, 1.0)), -np.inf)
    o = o.reshape(b, hq, tq, dv).astype(q.dtype)  # (B, Hq, Tq, Dv)
    if not return_lse:
        return o
    return o, lse.reshape(b, hq, tq)  # (B, Hq, Tq)
