"""Argument checks for the serving ops (varlen and paged attention), shared by the shipped
implementations: packed layouts as in flash-attn and vLLM, with clear errors for bad input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnspec.implementations.validate import check_positive


def check_cu_seqlens(cu: np.ndarray, total: int, name: str) -> np.ndarray:
    """cu_seqlens (B+1,) starts at 0, never decreases and ends at `total`; returns lengths (B,)."""
    cu = np.asarray(cu)
    if cu.ndim != 1 or cu.shape[0] < 2 or cu[0] != 0 or cu[-1] != total:
        raise ValueError(
            f"{name} must be (B+1,) offsets from 0 to {total} (the packed length), got {cu.tolist()}"
        )
    lens = np.diff(cu.astype(np.int64))  # (B,)
    if (lens < 0).any():
        raise ValueError(f"{name} must not decrease, got {cu.tolist()}")
    return lens


def check_varlen(
    cu_seqlens_q: np.ndarray,
    cu_seqlens_k: np.ndarray,
    total_q: int,
    total_k: int,
    causal: bool,
    *,
    empty: bool = False,
) -> None:
    """Both offsets well formed over the same sequences; a sequence with queries has keys
    (causal: at least as many keys as queries, as in dense causal attention), unless `empty`
    (an op that declares "empty_rows": queries without a visible key give 0)."""
    q_lens = check_cu_seqlens(cu_seqlens_q, total_q, "cu_seqlens_q")
    k_lens = check_cu_seqlens(cu_seqlens_k, total_k, "cu_seqlens_k")
    if q_lens.shape != k_lens.shape:
        raise ValueError(f"cu_seqlens_q has {q_lens.size} sequences, cu_seqlens_k {k_lens.size}")
    if empty:
        return
    short = (q_lens > 0) & (k_lens < (q_lens if causal else 1))
    if short.any():
        b = int(np.argmax(short))
        raise ValueError(
            f"sequence {b} has {int(q_lens[b])} queries but {int(k_lens[b])} keys "
            + ("(causal needs at least as many keys)" if causal else "(it needs a key)")
        )


def check_packed(q: Any, k: Any, v: Any) -> tuple[int, int, int, int]:
    """q (total_q, Hq, D), k (total_k, Hkv, D), v (total_k, Hkv, Dv); returns Hq, Hkv, D, Dv."""
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
        raise ValueError(
            f"varlen attention expects packed 3-d q, k, v (total, H, D); got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    _, Hq, D = (int(s) for s in q.shape)
    Tk, Hkv, Dk = (int(s) for s in k.shape)
    if Dk != D or tuple(v.shape[:2]) != (Tk, Hkv) or Hkv == 0 or Hq % Hkv:
        raise ValueError(
            f"packed shapes disagree: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} "
            "(k and v need the same tokens and kv heads; Hq a multiple of Hkv)"
        )
    return Hq, Hkv, D, int(v.shape[2])


def check_pool(
    num_blocks: int, block_size: int, kv_heads: int, head_dim: int, v_head_dim: int | None = None
) -> None:
    """Every pool dimension is a positive int."""
    check_positive(
        num_blocks=num_blocks,
        block_size=block_size,
        kv_heads=kv_heads,
        head_dim=head_dim,
        v_head_dim=head_dim if v_head_dim is None else v_head_dim,
    )


def check_slots(slots: np.ndarray, tokens: int, capacity: int) -> np.ndarray:
    """slot_mapping (tokens,) of slots in [0, capacity) or -1 (padding); returns it as int64."""
    slots = np.asarray(slots).astype(np.int64)
    if slots.shape != (tokens,):
        raise ValueError(f"slot_mapping must be ({tokens},), one slot per token; got {slots.shape}")
    bad = (slots < -1) | (slots >= capacity)
    if bad.any():
        raise ValueError(
            f"slot {int(slots[bad][0])} is outside the pool's {capacity} slots (-1 is padding)"
        )
    return slots


def check_paged(
    q_lens: np.ndarray,
    seq_lens: np.ndarray,
    block_table: np.ndarray,
    pool: tuple[int, int],
    *,
    empty: bool = False,
) -> None:
    """seq_lens (B,) >= the new tokens (any, with `empty`: queries without a visible key give
    0), block_table (B, max_blocks) covering them in the pool."""
    num_blocks, block_size = pool
    B = q_lens.shape[0]
    if seq_lens.shape != (B,) or block_table.ndim != 2 or block_table.shape[0] != B:
        raise ValueError(
            f"for {B} sequences seq_lens must be ({B},) and block_table ({B}, max_blocks); got "
            f"{seq_lens.shape} and {block_table.shape}"
        )
    if (seq_lens < (0 if empty else q_lens)).any():
        raise ValueError(
            f"seq_lens {seq_lens.tolist()} must count the new tokens {q_lens.tolist()}"
        )
    needed = -(-seq_lens // block_size)  # (B,) blocks each sequence fills
    if (needed > block_table.shape[1]).any():
        raise ValueError(
            f"block_table has {block_table.shape[1]} columns, but seq_lens {seq_lens.tolist()} "
            f"need up to {int(needed.max())} blocks of {block_size}"
        )
    used = np.arange(block_table.shape[1])[None, :] < needed[:, None]  # (B, max_blocks)
    ids = block_table[used]
    if ((ids < 0) | (ids >= num_blocks)).any():
        raise ValueError(f"block_table holds block ids outside 0..{num_blocks - 1}")
