"""Attention mutants: the classic ways a softmax-attention kernel goes wrong."""

from __future__ import annotations

from functools import partial

import numpy as np

import implementations.numpy_impl as base
from suite.meta.mutants import Mutant, derive


def broken_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool,
    scale: float | None = None,
    top_left: bool = False,
    see_ahead: int = 0,
    scale_by_d: bool = False,
    no_max_subtraction: bool = False,
    tile_heads: bool = False,
    zeros: bool = False,
    always_causal: bool = False,
    normalise_queries: bool = False,
    first_batch_kv: bool = False,
) -> np.ndarray:
    """numpy attention with one switchable bug per keyword."""
    _, Hq, Tq, D = q.shape
    Tk = k.shape[2]
    G = Hq // k.shape[1]
    scale = (1.0 / D if scale_by_d else 1.0 / np.sqrt(D)) if scale is None else scale
    reps = (1, G, 1, 1)
    kk = np.tile(k, reps) if tile_heads else np.repeat(k, G, axis=1)  # (B, Hq, Tk, D)
    vv = np.tile(v, reps) if tile_heads else np.repeat(v, G, axis=1)  # (B, Hq, Tk, Dv)
    if first_batch_kv:
        kk, vv = np.broadcast_to(kk[:1], kk.shape), np.broadcast_to(vv[:1], vv.shape)
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), kk) * scale  # (B, Hq, Tq, Tk)
    if causal or always_causal:
        i = np.arange(Tq)[:, None]
        j = np.arange(Tk)[None, :]
        offset = 0 if top_left else Tk - Tq
        s = np.where(j <= i + offset + see_ahead, s, -np.inf)
    m = 0.0 if no_max_subtraction else np.max(s, axis=-1, keepdims=True)
    with np.errstate(over="ignore", invalid="ignore"):
        p = np.exp(s - m)  # (B, Hq, Tq, Tk)
        p = p / p.sum(axis=-2 if normalise_queries else -1, keepdims=True)
    o = np.einsum("bhqk,bhkd->bhqd", p, vv)  # (B, Hq, Tq, Dv)
    return (np.zeros_like(o) if zeros else o).astype(q.dtype)


def attention_mutant(name: str, bug: str, kills: tuple[str, ...], **switch: bool | int) -> Mutant:
    """A mutant whose only op is attention with the given bug switched on."""
    impl = derive(base, f"mutant-{name}", attention=partial(broken_attention, **switch))
    return Mutant(name, bug, impl, kills)


MUTANTS = [
    attention_mutant(
        "top-left-causal",
        "causal mask aligned top-left, so decode queries see only the first keys",
        ("ATTN-REF",),
        top_left=True,
    ),
    attention_mutant(
        "mask-off-by-one",
        "causal mask lets each query see one key in its future",
        ("ATTN-CAUSAL-NO-FUTURE", "ATTN-REF"),
        see_ahead=1,
    ),
    attention_mutant(
        "scale-1-over-d", "default scale 1/D instead of 1/sqrt(D)", ("ATTN-REF",), scale_by_d=True
    ),
    attention_mutant(
        "no-max-subtraction",
        "softmax without subtracting the row max overflows on large logits",
        ("ATTN-STABLE",),
        no_max_subtraction=True,
    ),
    attention_mutant(
        "gqa-tile",
        "GQA maps query head h to kv head h % Hkv (tile) instead of h // (Hq/Hkv) (repeat)",
        ("ATTN-REF",),
        tile_heads=True,
    ),
    attention_mutant("zeros", "returns zeros of the right shape", ("ATTN-REF",), zeros=True),
    attention_mutant(
        "always-causal",
        "applies the causal mask even when causal=False",
        ("ATTN-PERMUTE", "ATTN-REF"),
        always_causal=True,
    ),
    attention_mutant(
        "softmax-over-queries",
        "normalises attention weights over the query axis instead of the key axis",
        ("ATTN-CONVEX",),
        normalise_queries=True,
    ),
    attention_mutant(
        "first-batch-kv",
        "every batch row attends to batch row 0's keys and values",
        ("ATTN-BATCH-INDEP",),
        first_batch_kv=True,
    ),
]
