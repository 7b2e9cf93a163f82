"""A worked example: a kernel with limits, declared so that the clauses draw inside them.

    pytest suite --impl implementations/examples/limited_kernel.py

Real serving kernels take only some block sizes and head dims, have their own non-causal
window convention, and offer some ops for causal calls only; called outside those they raise.
This numpy kernel behaves like vLLM's CPU paged attention in that respect: block sizes must be
multiples of 16, head dims (D and Dv) one of HEAD_DIMS, a non-causal window is symmetric
(|j - p| < w, as in vLLM and FlexAttention) and paged attention is causal only. It declares
all of that in `limits` (specs/limits.py), so every varlen and paged clause runs at every
regime the kernel accepts instead of ending at the first draw it rejects, and the report names
what the declaration left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

name = "limited-numpy"
dtypes = ("float32",)
options = frozenset({"window", "softcap"})
BLOCK_MULTIPLE = 16
HEAD_DIMS = (32, 64, 80, 96, 128, 192, 256)
limits = {
    "block_sizes": BLOCK_MULTIPLE,
    "head_dims": HEAD_DIMS,
    "window": "symmetric",
    "causal_only": ("paged_attention",),
}


def asarray(x: np.ndarray, dtype: str) -> np.ndarray:
    """numpy in, numpy out, in the working dtype (index arrays as int32)."""
    return np.array(x, dtype=np.dtype(dtype))


def to_numpy(x: np.ndarray) -> np.ndarray:
    return np.asarray(x)


def check_dims(*dims: int) -> None:
    """Raise, as a kernel compiled for some head dims does, on any other."""
    for d in dims:
        if d not in HEAD_DIMS:
            raise ValueError(f"head dim {d} is not supported; supported: {HEAD_DIMS}")


def dense(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool,
    scale: float | None = None,
    window: int | None = None,
    softcap: float | None = None,
    visible_keys: int | None = None,
) -> np.ndarray:
    """One sequence: q (Tq, Hq, D) over k (Tk, Hkv, D), v (Tk, Hkv, Dv) -> (Tq, Hq, Dv); only
    the first `visible_keys` keys count (all when None), the others are masked by their logits."""
    Tq, Hq, D = q.shape
    Tk, Hkv, _ = k.shape
    n = Tk if visible_keys is None else visible_keys  # the sequence's length
    kk = np.repeat(k.astype(np.float64), Hq // Hkv, axis=1)  # (Tk, Hq, D)
    vv = np.repeat(v.astype(np.float64), Hq // Hkv, axis=1)  # (Tk, Hq, Dv)
    with np.errstate(invalid="ignore", over="ignore"):
        s = np.einsum("qhd,khd->hqk", q.astype(np.float64), kk)  # (Hq, Tq, Tk)
        s *= 1.0 / np.sqrt(D) if scale is None else scale
        if softcap is not None:
            s = softcap * np.tanh(s / softcap)
    p_abs = np.arange(Tq)[:, None] + n - Tq  # (Tq, 1) absolute query positions
    j = np.arange(Tk)[None, :]  # (1, Tk)
    seen = j < n
    if causal:
        seen = seen & (j <= p_abs)
    if window is not None:
        seen = seen & (j > p_abs - window) & (j < p_abs + window)  # symmetric; causal: left
    s = np.where(seen, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)  # (Hq, Tq, 1)
    with np.errstate(invalid="ignore"):
        p = np.exp(s - np.where(np.isfinite(m), m, 0.0))  # (Hq, Tq, Tk)
        total = p.sum(axis=-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", p / np.where(total > 0, total, 1.0), vv)  # (Tq, Hq, Dv)
    return o.astype(q.dtype)


def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool,
    scale: float | None = None,
    window: int | None = None,
    softcap: float | None = None,
) -> np.ndarray:
    """Dense attention (B, Hq, Tq, D) over (B, Hkv, Tk, D), (B, Hkv, Tk, Dv)."""
    check_dims(q.shape[3], v.shape[3])
    opts: dict[str, Any] = {"scale": scale, "window": window, "softcap": softcap}
    rows = [
        dense(
            q[b].transpose(1, 0, 2),
            k[b].transpose(1, 0, 2),
            v[b].transpose(1, 0, 2),
            causal=causal,
            **opts,
        )
        for b in range(q.shape[0])
    ]  # each (Tq, Hq, Dv)
    return np.stack(rows).transpose(0, 2, 1, 3)  # (B, Hq, Tq, Dv)


def varlen_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    cu_seqlens_q: np.ndarray,
    cu_seqlens_k: np.ndarray,
    causal: bool,
    scale: float | None = None,
    window: int | None = None,
    softcap: float | None = None,
) -> np.ndarray:
    """Packed q (total_q, Hq, D), k (total_k, Hkv, D), v (total_k, Hkv, Dv), per sequence."""
    check_dims(q.shape[2], v.shape[2])
    out = np.zeros((q.shape[0], q.shape[1], v.shape[2]), q.dtype)  # (total_q, Hq, Dv)
    opts: dict[str, Any] = {"scale": scale, "window": window, "softcap": softcap}
    for b in range(len(cu_seqlens_q) - 1):
        qs = slice(int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1]))
        ks = slice(int(cu_seqlens_k[b]), int(cu_seqlens_k[b + 1]))
        if qs.stop > qs.start:
            out[qs] = dense(q[qs], k[ks], v[ks], causal=causal, **opts)
    return out


class Pool:
    """k_pages (num_blocks, block_size, Hkv, D), v_pages (num_blocks, block_size, Hkv, Dv)."""

    def __init__(
        self, num_blocks: int, block_size: int, kv_heads: int, D: int, Dv: int, dtype: str
    ) -> None:
        if block_size % BLOCK_MULTIPLE:
            raise ValueError(f"block size {block_size} is not a multiple of {BLOCK_MULTIPLE}")
        check_dims(D, Dv)
        self.k_pages = np.zeros((num_blocks, block_size, kv_heads, D), np.dtype(dtype))
        self.v_pages = np.zeros((num_blocks, block_size, kv_heads, Dv), np.dtype(dtype))
        self.block_size = block_size


def paged_kv_cache(
    num_blocks: int,
    block_size: int,
    kv_heads: int,
    head_dim: int,
    dtype: str,
    *,
    v_head_dim: int | None = None,
) -> Pool:
    """A zeroed pool; raises on block sizes and head dims the kernel does not take."""
    Dv = head_dim if v_head_dim is None else v_head_dim
    return Pool(num_blocks, block_size, kv_heads, head_dim, Dv, dtype)


def paged_kv_write(cache: Pool, k: np.ndarray, v: np.ndarray, slot_mapping: np.ndarray) -> None:
    """Token t to slot slot_mapping[t]; -1 is padding."""
    slots = np.asarray(slot_mapping, np.int64)
    keep = slots >= 0
    cache.k_pages.reshape(-1, *cache.k_pages.shape[2:])[slots[keep]] = k[keep]
    cache.v_pages.reshape(-1, *cache.v_pages.shape[2:])[slots[keep]] = v[keep]


def paged_attention(
    q: np.ndarray,
    cache: Pool,
    *,
    block_table: np.ndarray,
    seq_lens: np.ndarray,
    cu_seqlens_q: np.ndarray,
    causal: bool = True,
    scale: float | None = None,
    window: int | None = None,
    softcap: float | None = None,
) -> np.ndarray:
    """Causal only. Reads the sequence's keys and values position by position."""
    return read_paged(q, cache, block_table, seq_lens, cu_seqlens_q, causal, whole_blocks=False,
                      scale=scale, window=window, softcap=softcap)  # fmt: skip


def read_paged(
    q: np.ndarray,
    cache: Pool,
    block_table: np.ndarray,
    seq_lens: np.ndarray,
    cu_seqlens_q: np.ndarray,
    causal: bool,
    *,
    whole_blocks: bool,
    **opts: Any,
) -> np.ndarray:
    """Paged attention; with `whole_blocks` every slot of a sequence's last block is read and
    the slots past seq_len are masked by their logits only (vLLM's CPU kernel: 0 x NaN)."""
    if not causal:
        raise ValueError("paged attention is causal only")
    check_dims(q.shape[2], cache.v_pages.shape[3])
    bs = cache.block_size
    out = np.zeros((q.shape[0], q.shape[1], cache.v_pages.shape[3]), q.dtype)  # (total_q, Hq, Dv)
    for b in range(len(seq_lens)):
        qs = slice(int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1]))
        n = int(seq_lens[b])
        if qs.stop == qs.start:
            continue
        pos = np.arange(-(-n // bs) * bs if whole_blocks else n)  # (T,) positions read
        blocks = np.asarray(block_table)[b, pos // bs]  # (T,)
        k = cache.k_pages[blocks, pos % bs]  # (T, Hkv, D)
        v = cache.v_pages[blocks, pos % bs]  # (T, Hkv, Dv)
        out[qs] = dense(q[qs], k, v, causal=True, visible_keys=n, **opts)
    return out
