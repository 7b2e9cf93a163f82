"""Quantized KV-cache mutants: the scale applied on one path and forgotten on another, the
wrong scale, and writers that round or saturate wrongly (FlashInfer, SGLang, aiter, torch)."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

import attnspec.implementations.numpy_impl as base
from attnspec.implementations.numpy_impl import quant, serving
from attnspec.implementations.numpy_impl.masking import OPTIONS
from attnspec.implementations.paged_base import check_slots
from attnspec.specs.reference.quant import MANTISSA_BITS, MAX, grid
from attnspec.suite.meta.mutants import Mutant, derive


def scaled(codes: np.ndarray, scale: np.ndarray, dtype: Any) -> np.ndarray:
    """Codes (T, H, D) times a scale per head (H,) in `dtype`."""
    return (codes.astype(np.float64) * scale[:, None]).astype(dtype)


def broken_attention(
    q: np.ndarray,
    cache: Any,
    *,
    block_table: np.ndarray,
    seq_lens: np.ndarray,
    cu_seqlens_q: np.ndarray,
    causal: bool = True,
    scale: float | None = None,
    window: int | None = None,
    softcap: float | None = None,
    return_lse: bool = False,
    bug: str,
) -> Any:
    """numpy's paged attention over a quantized pool with one dequantization bug: `prefill` (no
    scale for a sequence with several new tokens), `shared` (no scale for blocks two sequences
    share), `query_head` (query head h takes kv scale h % Hkv, not h // G), `k_for_v`."""
    bs, Hkv = cache.block_size, cache.k_pages.shape[2]
    k_scale, v_scale = cache.scales
    table, lens = np.asarray(block_table, np.int64), np.asarray(seq_lens, np.int64)
    cu = np.asarray(cu_seqlens_q, np.int64)
    used = [table[b, : -(-int(n) // bs)] for b, n in enumerate(lens)]
    ids, counts = np.unique(np.concatenate(used) if used else [], return_counts=True)
    shared = set(ids[counts > 1].tolist())
    out = np.zeros((q.shape[0], q.shape[1], cache.v_pages.shape[3]), q.dtype)
    lse = serving.lse_buffer(q)
    ones = np.ones(Hkv)
    for b in range(lens.size):
        qs = slice(int(cu[b]), int(cu[b + 1]))
        if qs.stop == qs.start:
            continue
        pos = np.arange(lens[b])
        blocks = table[b, pos // bs]
        kc, vc = cache.k_pages[blocks, pos % bs], cache.v_pages[blocks, pos % bs]
        ks, vs = k_scale, (k_scale if bug == "k_for_v" else v_scale)
        if bug == "prefill" and qs.stop - qs.start > 1:
            ks, vs = ones, ones
        k, v = scaled(kc, ks, q.dtype), scaled(vc, vs, q.dtype)
        if bug == "shared":
            plain = np.isin(blocks, list(shared))[:, None, None]  # (T, 1, 1)
            k = np.where(plain, kc.astype(q.dtype), k)
            v = np.where(plain, vc.astype(q.dtype), v)
        if bug == "query_head":  # one kv head per query head, each with the flat-indexed scale
            Hq = q.shape[1]
            G = Hq // Hkv
            heads = np.arange(Hq)
            k = scaled(np.repeat(kc, G, axis=1), k_scale[heads % Hkv], q.dtype)
            v = scaled(np.repeat(vc, G, axis=1), v_scale[heads % Hkv], q.dtype)
        out[qs], lse[qs] = serving.dense(
            q[qs], k, v, causal=causal, scale=scale, window=window, softcap=softcap
        )
    return (out, lse) if return_lse else out


def truncate(y: np.ndarray, kv_dtype: str) -> np.ndarray:
    """y on the grid by truncation toward zero (saturating)."""
    g = grid(kv_dtype)
    pos = g[g >= 0]
    a = np.clip(np.abs(y), 0, MAX[kv_dtype])
    return np.sign(y) * pos[np.searchsorted(pos, a, side="right") - 1]


def coarse(y: np.ndarray, kv_dtype: str) -> np.ndarray:
    """y rounded with one mantissa bit fewer than the type has (int8: to even integers)."""
    if kv_dtype == "int8":
        return np.clip(np.rint(y / 2) * 2, -126, 126)
    frac, exp = np.frexp(np.clip(y, -MAX[kv_dtype], MAX[kv_dtype]))  # frac in [0.5, 1)
    bits = 2.0 ** MANTISSA_BITS[kv_dtype]
    return np.clip(np.rint(frac * bits) / bits * 2.0**exp, -MAX[kv_dtype], MAX[kv_dtype])


def broken_write(
    cache: Any, k: np.ndarray, v: np.ndarray, slot_mapping: np.ndarray, *, bug: str
) -> None:
    """numpy's paged_kv_write into a quantized pool with one writer bug: `no_saturation` (x /
    scale cast as it is: NaN or Inf past the max), `truncate`, `coarse` (a coarser grid)."""
    Hkv, D, Dv = cache.k_pages.shape[2], cache.k_pages.shape[3], cache.v_pages.shape[3]
    slots = check_slots(slot_mapping, k.shape[0], cache.num_blocks * cache.block_size)
    keep = slots >= 0
    kv = str(cache.kv_dtype)
    codes = []
    for x, s in zip((k, v), cache.scales, strict=True):
        y = x.astype(np.float64) / s[:, None]
        if bug == "no_saturation":
            with np.errstate(invalid="ignore", over="ignore"):
                c = (np.rint(y) if kv == "int8" else y).astype(quant.storage(kv))
        else:
            c = (truncate(y, kv) if bug == "truncate" else coarse(y, kv)).astype(quant.storage(kv))
        codes.append(c)
    cache.k_pages.reshape(-1, Hkv, D)[slots[keep]] = codes[0][keep]
    cache.v_pages.reshape(-1, Hkv, Dv)[slots[keep]] = codes[1][keep]


def quant_mutant(name: str, bug: str, kills: tuple[str, ...], **ops: Any) -> Mutant:
    """numpy with the given paged ops replaced, declaring every option numpy declares."""
    impl = derive(
        base,
        f"mutant-{name}",
        paged_kv_cache=base.paged_kv_cache,
        paged_kv_write=ops.get("paged_kv_write", base.paged_kv_write),
        paged_attention=ops.get("paged_attention", base.paged_attention),
        merge_attention_states=base.merge_attention_states,
    )
    impl.options = OPTIONS
    return Mutant(name, bug, impl, kills)


MUTANTS = [
    quant_mutant(
        "qkv-prefill-no-scale",
        "the chunked-prefill path reads the quantized cache without its scales (FlashInfer's "
        "paged prefill wrapper losing k_scale / v_scale)",
        ("QKV-EQ-DEQUANT", "QKV-ERROR-MODEL"),
        paged_attention=partial(broken_attention, bug="prefill"),
    ),
    quant_mutant(
        "qkv-shared-no-scale",
        "blocks shared by several sequences (a prefix-cache hit) are read without the scales "
        "(SGLang's ragged + paged split)",
        ("QKV-EQ-DEQUANT",),
        paged_attention=partial(broken_attention, bug="shared"),
    ),
    quant_mutant(
        "qkv-scale-by-query-head",
        "per-head scales indexed by the query head (h % Hkv) instead of its kv head (h // G)",
        ("QKV-EQ-DEQUANT", "QKV-ERROR-MODEL"),
        paged_attention=partial(broken_attention, bug="query_head"),
    ),
    quant_mutant(
        "qkv-k-scale-for-v",
        "the values are dequantized with k_scale",
        ("QKV-EQ-DEQUANT", "QKV-ERROR-MODEL"),
        paged_attention=partial(broken_attention, bug="k_for_v"),
    ),
    quant_mutant(
        "qkv-cast-no-saturation",
        "x / scale cast to the 8-bit type without clamping: an outlier becomes NaN (e4m3fn), Inf "
        "(e5m2) or wraps (int8)",
        ("QKV-WRITE-ROUNDS",),
        paged_kv_write=partial(broken_write, bug="no_saturation"),
    ),
    quant_mutant(
        "qkv-truncate",
        "x / scale truncated toward zero onto the grid instead of rounded to nearest even",
        ("QKV-WRITE-ROUNDS", "QKV-ERROR-MODEL"),
        paged_kv_write=partial(broken_write, bug="truncate"),
    ),
    quant_mutant(
        "qkv-coarse-grid",
        "rounded with one mantissa bit fewer than the declared type (e4m3 stored on e5m2's "
        "grid; int8 on even integers)",
        ("QKV-WRITE-ROUNDS", "QKV-ERROR-MODEL"),
        paged_kv_write=partial(broken_write, bug="coarse"),
    ),
]
