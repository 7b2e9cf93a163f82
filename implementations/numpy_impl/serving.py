"""Serving-shaped attention in numpy: packed varlen batches and a paged KV cache (vLLM layout).

Reference quality: one sequence at a time through numpy's dense attention, so every
sequence is exactly the dense computation over its own keys.
"""

from __future__ import annotations

import numpy as np

from attnspec.implementations.numpy_impl import quant
from attnspec.implementations.numpy_impl.attention import attention_lse
from attnspec.implementations.paged_base import (
    check_cu_seqlens,
    check_packed,
    check_paged,
    check_pool,
    check_slots,
    check_varlen,
)
from attnspec.implementations.quant_base import check_scales


def dense(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, *, causal: bool, **options: float | int | None
) -> tuple[np.ndarray, np.ndarray]:
    """One sequence: q (Tq, Hq, D), k (Tk, Hkv, D), v (Tk, Hkv, Dv) -> o (Tq, Hq, Dv) and its
    log-sum-exp (Tq, Hq)."""
    o, lse = attention_lse(
        q.transpose(1, 0, 2)[None],  # (1, Hq, Tq, D)
        k.transpose(1, 0, 2)[None],  # (1, Hkv, Tk, D)
        v.transpose(1, 0, 2)[None],  # (1, Hkv, Tk, Dv)
        causal=causal,
        **options,  # type: ignore[arg-type]
    )
    return o[0].transpose(1, 0, 2), lse[0].T  # (Tq, Hq, Dv), (Tq, Hq)


def lse_buffer(q: np.ndarray) -> np.ndarray:
    """The packed log-sum-exp (total_q, Hq), -inf until a sequence fills its rows."""
    return np.full(q.shape[:2], -np.inf, np.float64 if q.dtype == np.float64 else np.float32)


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
    return_lse: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Packed q (total_q, Hq, D), k/v (total_k, Hkv, D): each sequence attends to its own keys
    (with return_lse, also the log-sum-exp (total_q, Hq)); a query without keys gives 0."""
    Hq, _, _, Dv = check_packed(q, k, v)
    check_varlen(cu_seqlens_q, cu_seqlens_k, q.shape[0], k.shape[0], causal, empty=True)
    q_lens = np.diff(np.asarray(cu_seqlens_q, np.int64))  # (B,)
    out = np.zeros((q.shape[0], Hq, Dv), q.dtype)  # (total_q, Hq, Dv)
    lse = lse_buffer(q)  # (total_q, Hq)
    opts = {"scale": scale, "window": window, "softcap": softcap}
    for b in range(q_lens.size):
        qs = slice(int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1]))
        ks = slice(int(cu_seqlens_k[b]), int(cu_seqlens_k[b + 1]))
        if q_lens[b]:
            out[qs], lse[qs] = dense(q[qs], k[ks], v[ks], causal=causal, **opts)
    return (out, lse) if return_lse else out


class NumpyPagedKVCache:
    """A pool of blocks k_pages (num_blocks, block_size, Hkv, D) and v_pages (..., Hkv, Dv),
    zero-initialised; Dv is `v_head_dim` (default D)."""

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        kv_heads: int,
        head_dim: int,
        dtype: str,
        v_head_dim: int | None = None,
        kv_dtype: str | None = None,
        k_scale: float | np.ndarray | None = None,
        v_scale: float | np.ndarray | None = None,
    ) -> None:
        Dv = head_dim if v_head_dim is None else v_head_dim
        check_pool(num_blocks, block_size, kv_heads, head_dim, Dv)
        self.scales = check_scales(kv_dtype, k_scale, v_scale, kv_heads)  # (Hkv,) x 2 or None
        self.kv_dtype = kv_dtype
        store = np.dtype(dtype) if kv_dtype is None else quant.storage(kv_dtype)
        shape = (num_blocks, block_size, kv_heads, head_dim)
        self.k_pages = np.zeros(shape, store)  # (num_blocks, block_size, Hkv, D)
        self.v_pages = np.zeros((*shape[:3], Dv), store)  # (..., Hkv, Dv)
        self.block_size = block_size
        self.num_blocks = num_blocks


def paged_kv_cache(
    num_blocks: int,
    block_size: int,
    kv_heads: int,
    head_dim: int,
    dtype: str,
    *,
    v_head_dim: int | None = None,
    kv_dtype: str | None = None,
    k_scale: float | np.ndarray | None = None,
    v_scale: float | np.ndarray | None = None,
) -> NumpyPagedKVCache:
    """An empty pool of `num_blocks` blocks of `block_size` token slots; with `kv_dtype`
    ("float8_e4m3fn", "float8_e5m2", "int8") its pages hold codes meaning code × scale."""
    return NumpyPagedKVCache(
        num_blocks, block_size, kv_heads, head_dim, dtype, v_head_dim, kv_dtype, k_scale, v_scale
    )


def paged_kv_write(
    cache: NumpyPagedKVCache, k: np.ndarray, v: np.ndarray, slot_mapping: np.ndarray
) -> None:
    """Write token t of k (T, Hkv, D), v (T, Hkv, Dv) to slot slot_mapping[t]
    (block*block_size + offset); slots of -1 are padding and skipped."""
    _, block_size, Hkv, D = cache.k_pages.shape
    Dv = cache.v_pages.shape[3]
    if k.ndim != 3 or k.shape[1:] != (Hkv, D) or v.shape != (k.shape[0], Hkv, Dv):
        raise ValueError(
            f"k, v must be (T, {Hkv}, {D}), (T, {Hkv}, {Dv}); got {k.shape}, {v.shape}"
        )
    slots = check_slots(slot_mapping, k.shape[0], cache.num_blocks * block_size)
    keep = slots >= 0  # (T,)
    if cache.scales is not None:  # stored: saturate(round(x / scale))
        k, v = (
            quant.quantize(x, str(cache.kv_dtype), s)
            for x, s in zip((k, v), cache.scales, strict=True)
        )
    cache.k_pages.reshape(-1, Hkv, D)[slots[keep]] = k[keep]
    cache.v_pages.reshape(-1, Hkv, Dv)[slots[keep]] = v[keep]


def paged_attention(
    q: np.ndarray,
    cache: NumpyPagedKVCache,
    *,
    block_table: np.ndarray,
    seq_lens: np.ndarray,
    cu_seqlens_q: np.ndarray,
    causal: bool = True,
    scale: float | None = None,
    window: int | None = None,
    softcap: float | None = None,
    return_lse: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Packed queries (total_q, Hq, D) of each sequence's newest tokens over its cached keys
    (with return_lse, also the log-sum-exp (total_q, Hq)); a query seeing no key gives 0."""
    q_lens = check_cu_seqlens(cu_seqlens_q, q.shape[0], "cu_seqlens_q")
    seq_lens, block_table = np.asarray(seq_lens, np.int64), np.asarray(block_table, np.int64)
    check_paged(q_lens, seq_lens, block_table, (cache.num_blocks, cache.block_size), empty=True)
    bs = cache.block_size
    out = np.zeros((q.shape[0], q.shape[1], cache.v_pages.shape[3]), q.dtype)  # (total_q, Hq, Dv)
    lse = lse_buffer(q)  # (total_q, Hq)
    opts = {"scale": scale, "window": window, "softcap": softcap}
    for b in range(q_lens.size):
        qs = slice(int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1]))
        pos = np.arange(seq_lens[b])  # (T,)
        blocks = block_table[b, pos // bs]  # (T,)
        k = cache.k_pages[blocks, pos % bs]  # (T, Hkv, D)
        v = cache.v_pages[blocks, pos % bs]  # (T, Hkv, Dv)
        if cache.scales is not None:  # code x scale, in the query's dtype
            k, v = (
                quant.dequantize(x, s, q.dtype) for x, s in zip((k, v), cache.scales, strict=True)
            )
        if qs.stop > qs.start:
            out[qs], lse[qs] = dense(q[qs], k, v, causal=causal, **opts)
    return (out, lse) if return_lse else out
