"""Tiled-attention mutants: the classic ways an online-softmax kernel goes wrong."""

from __future__ import annotations

from functools import partial

import numpy as np

import attnspec.implementations.numpy_impl as base
from attnspec.suite.meta.mutants import Mutant, derive
from attnspec.suite.meta.mutants.attention import split_kv


def broken_tiled_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool,
    scale: float | None = None,
    block_q: int,
    block_k: int,
    return_lse: bool = False,
    no_rescale: bool = False,
    rescale_sum_only: bool = False,
    stop_one_block_early: bool = False,
    drop_partial_block: bool = False,
    lse_without_max: bool = False,
    no_max_subtraction: bool = False,
    drop_partial_after: int = 0,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """numpy tiled attention (one query row block at a time) with one switchable bug per keyword."""
    B, Hq, Tq, D = q.shape
    Tk, G = k.shape[2], Hq // k.shape[1]
    scale = 1.0 / np.sqrt(D) if scale is None else scale
    kk = np.repeat(k, G, axis=1).astype(np.float64)  # (B, Hq, Tk, D)
    vv = np.repeat(v, G, axis=1).astype(np.float64)  # (B, Hq, Tk, Dv)
    o = np.zeros((B, Hq, Tq, v.shape[-1]))  # (B, Hq, Tq, Dv)
    lse = np.full((B, Hq, Tq), -np.inf)  # (B, Hq, Tq)
    for q0 in range(0, Tq, block_q):
        q1 = min(q0 + block_q, Tq)
        rows = np.arange(q0, q1)[:, None]  # (bq, 1)
        m = np.full((B, Hq, q1 - q0), -np.inf)  # (B, Hq, bq)
        l = np.zeros((B, Hq, q1 - q0))  # (B, Hq, bq)
        acc = np.zeros((B, Hq, q1 - q0, v.shape[-1]))  # (B, Hq, bq, Dv)
        end = min(Tk, q1 + Tk - Tq) if causal else Tk
        if stop_one_block_early and causal:
            end = max(0, -(-end // block_k) - 1) * block_k
        if drop_partial_block or (drop_partial_after and -(-Tk // block_k) > drop_partial_after):
            end = min(end, Tk // block_k * block_k)
        for k0 in range(0, end, block_k):
            k1 = min(k0 + block_k, Tk)
            s = q[:, :, q0:q1] @ kk[:, :, k0:k1].swapaxes(-1, -2) * scale  # (B, Hq, bq, bk)
            if causal:
                s = np.where(np.arange(k0, k1)[None, :] > rows + Tk - Tq, -np.inf, s)
            m_new = np.zeros_like(m) if no_max_subtraction else np.maximum(m, s.max(-1))
            m_safe = np.where(np.isfinite(m_new), m_new, 0.0)  # (B, Hq, bq)
            with np.errstate(over="ignore", invalid="ignore"):
                p = np.exp(s - m_safe[..., None])  # (B, Hq, bq, bk)
                alpha = np.exp(m - m_safe)  # (B, Hq, bq)
            keep = np.ones_like(alpha) if no_rescale or no_max_subtraction else alpha
            l = keep * l + p.sum(-1)
            keep_acc = np.ones_like(alpha) if rescale_sum_only else keep
            acc = keep_acc[..., None] * acc + p @ vv[:, :, k0:k1]
            m = m_new
        with np.errstate(divide="ignore", invalid="ignore"):
            o[:, :, q0:q1] = np.where(l[..., None] > 0, acc / l[..., None], 0.0)
            lse[:, :, q0:q1] = np.log(l) + (0.0 if lse_without_max else m)
    if return_lse:
        return o.astype(q.dtype), lse
    return o.astype(q.dtype)


def tiled_mutant(name: str, bug: str, kills: tuple[str, ...], **switch: bool | int) -> Mutant:
    """A mutant whose only op is tiled_attention with the given bug switched on."""
    impl = derive(base, f"mutant-{name}", tiled_attention=partial(broken_tiled_attention, **switch))
    return Mutant(name, bug, impl, kills)


MUTANTS = [
    tiled_mutant(
        "no-rescale",
        "the running sum and accumulator are not rescaled when the running max grows",
        ("FLASH-EQ-ATTN",),
        no_rescale=True,
    ),
    tiled_mutant(
        "rescale-sum-only",
        "the running sum is rescaled when the running max grows, the output accumulator is not",
        ("FLASH-EQ-ATTN",),
        rescale_sum_only=True,
    ),
    tiled_mutant(
        "causal-skip-off-by-one",
        "causal block skipping stops one key block early, dropping the diagonal block",
        ("FLASH-EQ-ATTN",),
        stop_one_block_early=True,
    ),
    tiled_mutant(
        "drop-partial-block",
        "the last key block is dropped when block_k does not divide Tk",
        ("FLASH-EQ-ATTN",),
        drop_partial_block=True,
    ),
    tiled_mutant(
        "drop-partial-block-long",
        "with more than 32 key blocks (a long cache), the last, partial key block is dropped",
        ("FLASH-EQ-ATTN",),
        drop_partial_after=32,
    ),
    Mutant(
        "tiled-split-kv-long",
        "over 1024 keys, a decode query's two key halves are combined without their "
        "log-sum-exp weights",
        derive(base, "mutant-tiled-split-kv-long", tiled_attention=split_kv(base.tiled_attention)),
        ("FLASH-EQ-ATTN",),
    ),
    tiled_mutant(
        "lse-without-max",
        "the returned log-sum-exp forgets to add back the running max",
        ("FLASH-LSE",),
        lse_without_max=True,
    ),
    tiled_mutant(
        "tiled-no-running-max",
        "exponentials are taken of raw logits (no running max), overflowing on large logits",
        ("FLASH-STABLE",),
        no_max_subtraction=True,
    ),
]
