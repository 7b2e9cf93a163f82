"""Attention mutants: the classic ways a softmax-attention kernel goes wrong."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

import attnspec.implementations.numpy_impl as base
from attnspec.suite.meta.mutants import Mutant, derive


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
    pow2_groups: bool = False,
    finite_mask: float = 0.0,
    clamp_logits: float = 0.0,
    tile_d: int = 0,
    batch_rows: int = 0,
    wide_tile: int = 0,
    head_slots: int = 0,
    scale_by_dv: bool = False,
) -> np.ndarray:
    """numpy attention with one switchable bug per keyword."""
    B, Hq, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    G = Hq // Hkv
    default = 1.0 / np.sqrt(min(D, tile_d) if tile_d else D)
    if scale_by_dv:
        default = 1.0 / np.sqrt(v.shape[-1])
    scale = (1.0 / D if scale_by_d else default) if scale is None else scale
    reps = (1, G, 1, 1)
    tile_heads = tile_heads or bool(wide_tile and G >= wide_tile and Hkv >= 2)
    kk = np.tile(k, reps) if tile_heads else np.repeat(k, G, axis=1)  # (B, Hq, Tk, D)
    vv = np.tile(v, reps) if tile_heads else np.repeat(v, G, axis=1)  # (B, Hq, Tk, Dv)
    if pow2_groups:  # head h reads kv head h >> log2(G rounded up to a power of two)
        heads = np.minimum(np.arange(Hq) >> int(np.ceil(np.log2(G))), Hkv - 1)  # (Hq,)
        kk, vv = k[:, heads], v[:, heads]
    if first_batch_kv:
        kk, vv = np.broadcast_to(kk[:1], kk.shape), np.broadcast_to(vv[:1], vv.shape)
    if batch_rows and B > batch_rows:  # rows past the first block read the first block's rows
        rows = np.arange(B) % batch_rows  # (B,)
        kk, vv = kk[rows], vv[rows]
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), kk) * scale  # (B, Hq, Tq, Tk)
    if clamp_logits:
        s = np.clip(s, -clamp_logits, clamp_logits)
    if causal or always_causal:
        i = np.arange(Tq)[:, None]
        j = np.arange(Tk)[None, :]
        offset = 0 if top_left else Tk - Tq
        visible = j <= i + offset + see_ahead
        s = np.where(visible, s, s + finite_mask if finite_mask else -np.inf)
    m = 0.0 if no_max_subtraction else np.max(s, axis=-1, keepdims=True)
    with np.errstate(over="ignore", invalid="ignore"):
        p = np.exp(s - m)  # (B, Hq, Tq, Tk)
        p = p / p.sum(axis=-2 if normalise_queries else -1, keepdims=True)
    o = np.einsum("bhqk,bhkd->bhqd", p, vv)  # (B, Hq, Tq, Dv)
    if head_slots and Hq > head_slots:  # a launch grid of head_slots heads, reused past it
        o = o[:, np.arange(Hq) % head_slots]
    return (np.zeros_like(o) if zeros else o).astype(q.dtype)


Attention = Callable[..., np.ndarray]


def split_kv(attention: Attention, above: int = 1024) -> Attention:
    """Over more than `above` keys, attend to the two halves of the keys separately and average
    the two outputs, forgetting to weigh each half by its softmax mass (its log-sum-exp): the
    flash-decoding combine step done wrong, on the path only long caches take."""

    def run(q: np.ndarray, k: np.ndarray, v: np.ndarray, **kw: Any) -> np.ndarray:
        Tk = k.shape[2]
        if Tk <= above or (kw.get("causal") and q.shape[2] > 1):
            return attention(q, k, v, **kw)
        half = Tk // 2
        a = attention(q, k[:, :, :half], v[:, :, :half], **{**kw, "causal": False})
        b = attention(q, k[:, :, half:], v[:, :, half:], **{**kw, "causal": False})
        return ((a.astype(np.float64) + b) / 2).astype(q.dtype)

    return run


def length_wrap(attention: Attention, bits: int = 15) -> Attention:
    """Keeps the cache length in a signed 16-bit field: past 2**15 - 1 keys it wraps, and the
    kernel attends only to the first (Tk mod 2**15) keys, at least one. Right up to 32767
    keys; only a long context (32768 and past) takes the wrong path."""
    limit = 1 << bits

    def run(q: np.ndarray, k: np.ndarray, v: np.ndarray, **kw: Any) -> np.ndarray:
        Tk = k.shape[2]
        if Tk < limit:
            return attention(q, k, v, **kw)
        n = max(Tk % limit, 1)
        return attention(q, k[:, :, :n], v[:, :, :n], **{**kw, "causal": False})

    return run


class StaleByShape:
    """Keeps the last result per input shape and hands it back for the next call of that shape
    (a memo keyed by shape instead of by content)."""

    def __init__(self, attention: Attention) -> None:
        self.attention = attention
        self.seen: dict[tuple[Any, ...], np.ndarray] = {}

    def __call__(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, **kw: Any) -> np.ndarray:
        key = (q.shape, k.shape, v.shape, q.dtype, tuple(sorted(kw.items())))
        if key not in self.seen:
            self.seen[key] = self.attention(q, k, v, **kw)
        return self.seen[key].copy()


class WorkspaceByShape:
    """Accumulates into a workspace kept per shape and never zeroed: the first call of a shape is
    right, the next one adds the previous output in."""

    def __init__(self, attention: Attention) -> None:
        self.attention = attention
        self.work: dict[tuple[Any, ...], np.ndarray] = {}

    def __call__(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, **kw: Any) -> np.ndarray:
        out = self.attention(q, k, v, **kw)
        key = (out.shape, out.dtype)
        if key in self.work:
            self.work[key] = self.work[key] + out  # should have been reset to out
            return self.work[key].copy()
        self.work[key] = out.copy()
        return out


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
    # Regimes where real kernels break: each misbehaves only there.
    Mutant(
        "split-kv-long",
        "over 1024 cached keys, a decode query attends to the two halves of the cache apart and "
        "averages them without their log-sum-exp weights (flash-decoding's combine step)",
        derive(base, "mutant-split-kv-long", attention=split_kv(base.attention)),
        ("ATTN-REF",),
    ),
    Mutant(
        "length-wrap-32768",
        "keeps the cache length in a signed 16-bit field: past 32767 keys it wraps and the "
        "kernel attends to the first Tk mod 32768 keys only",
        derive(base, "mutant-length-wrap-32768", attention=length_wrap(base.attention)),
        ("ATTN-REF",),
    ),
    attention_mutant(
        "pow2-group-map",
        "query head h reads kv head h >> ceil(log2 G): right for groups of 1, 2, 4, 8, wrong for "
        "3, 5, 6, 7 (Qwen2-7B's 7)",
        ("ATTN-REF",),
        pow2_groups=True,
    ),
    attention_mutant(
        "finite-mask-1e4",
        "the causal mask adds -1e4 instead of -inf: invisible keys still win against visible "
        "logits below -1e4",
        ("ATTN-CAUSAL-NO-FUTURE",),
        finite_mask=-1e4,
    ),
    attention_mutant(
        "finite-mask-1e9",
        "the causal mask adds -1e9 instead of -inf (the float32 'large negative' idiom)",
        ("ATTN-CAUSAL-NO-FUTURE",),
        finite_mask=-1e9,
    ),
    attention_mutant(
        "clamp-logits-1e4",
        "a saturating fast exp clamps logits to +-1e4, so logits past 1e4 tie",
        ("ATTN-STABLE",),
        clamp_logits=1e4,
    ),
    attention_mutant(
        "head-dim-tile-128",
        "the default scale is 1/sqrt(128) for head dims past 128 (a kernel tiled for D <= 128)",
        ("ATTN-REF",),
        tile_d=128,
    ),
    attention_mutant(
        "batch-block-4",
        "batch rows past the first 4 read the keys and values of row b % 4",
        ("ATTN-BATCH-INDEP",),
        batch_rows=4,
    ),
    attention_mutant(
        "wide-group-tile",
        "for groups of 8+ query heads per KV head, query head h reads kv head h % Hkv (a second "
        "kernel for wide groups with the tile map): seen only with two or more KV heads",
        ("ATTN-REF",),
        wide_tile=8,
    ),
    attention_mutant(
        "head-slots-32",
        "a launch grid of 32 head slots: query heads past 31 get the output of head h % 32 "
        "(every 7B+ model has 32 or more query heads)",
        ("ATTN-REF",),
        head_slots=32,
    ),
    attention_mutant(
        "scale-by-dv",
        "the default scale is 1/sqrt(Dv), the value head dim, instead of 1/sqrt(D): right "
        "whenever Dv == D, wrong for DeepSeek's 192/128",
        ("ATTN-REF",),
        scale_by_dv=True,
    ),
    Mutant(
        "stale-by-shape",
        "returns the previous result for a call with the same shapes (a memo keyed by shape)",
        derive(base, "mutant-stale-by-shape", attention=StaleByShape(base.attention)),
        ("ATTN-REF",),
    ),
    Mutant(
        "workspace-by-shape",
        "accumulates into a per-shape workspace that is never zeroed between calls",
        derive(base, "mutant-workspace-by-shape", attention=WorkspaceByShape(base.attention)),
        ("ATTN-REF",),
    ),
]


def half_positions_mask() -> Mutant | None:
    """The torch attention with its causal mask built from positions held in the input dtype:
    exact in float32 (integers to 2**24), but float16 rounds positions past 2048 and bfloat16
    past 256, so there a chunk's queries see a few of their future keys. None without torch."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    import attnspec.implementations.torch_impl as torch_impl

    def attention(q: Any, k: Any, v: Any, *, causal: bool, scale: float | None = None) -> Any:
        Hq, Tq, D, Hkv, Tk = q.shape[1], q.shape[2], q.shape[3], k.shape[1], k.shape[2]
        kk, vv = (x.repeat_interleave(Hq // Hkv, dim=1) for x in (k, v))
        s = (q.float() @ kk.float().transpose(-1, -2)) * (scale or 1 / math.sqrt(D))
        if causal:  # positions in the input dtype
            i = torch.arange(Tq, dtype=q.dtype)[:, None] + torch.tensor(Tk - Tq, dtype=q.dtype)
            j = torch.arange(Tk, dtype=q.dtype)[None, :]
            s = s.masked_fill(j > i, float("-inf"))
        return (torch.softmax(s, dim=-1) @ vv.float()).to(q.dtype)

    impl = derive(torch_impl.impl, "mutant-half-positions-mask", attention=attention)
    return Mutant(
        "half-positions-mask",
        "the causal mask compares positions held in the input dtype: bfloat16 rounds positions "
        "past 256 (float16 past 2048), so a chunk's queries see a few future keys; float32 is "
        "exact",
        impl,
        ("ATTN-CAUSAL-NO-FUTURE",),
        dtype="bfloat16",
    )


MUTANTS += [m for m in (half_positions_mask(),) if m is not None]
