"""Decoder mutants: the generation-loop bugs that op-level checks miss.

Each is the numpy decoder with one method overridden, built from the same weights (the
bfloat16 one, where torch imports, is the torch decoder: numpy has no bfloat16).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np

import attnspec.implementations.numpy_impl as base
from attnspec.implementations.kv_base import DecoderCache
from attnspec.implementations.numpy_impl.decoder import NumpyDecoder
from attnspec.implementations.numpy_impl.kv_cache import NumpyKVCache
from attnspec.specs.decoder_weights import DecoderConfig
from attnspec.suite.meta.mutants import Mutant, derive


class RopeRestarts(NumpyDecoder):
    """Every call numbers its tokens from 0, so decode steps get position 0 again."""

    def _positions(self, start: int, t: int) -> np.ndarray:
        return np.arange(t)  # (T,)


class DecodePositionsWrap(NumpyDecoder):
    """Decode steps read RoPE angles from a table of 256 positions, indexed modulo its size:
    right until the sequence passes 256 tokens."""

    def _positions(self, start: int, t: int) -> np.ndarray:
        positions = super()._positions(start, t)  # (T,)
        return positions % 256 if start > 0 else positions


class PositionsWrap(NumpyDecoder):
    """Every call reads RoPE angles from a 256-entry table modulo its size: self-consistent (the
    cached and full paths agree) but another model past 256 tokens."""

    def _positions(self, start: int, t: int) -> np.ndarray:
        return super()._positions(start, t) % 256  # (T,)


class CacheAfterAttention(NumpyDecoder):
    """Decode attends over the cache as it was, then writes: a new token never sees itself."""

    stale = False  # whether the keys being attended are all from earlier calls

    def _keys_values(
        self, cache: DecoderCache | None, i: int, start: int, k: np.ndarray, v: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        self.stale = cache is not None and start > 0
        if not self.stale:
            return super()._keys_values(cache, i, start, k, v)
        layer = cache.layers[i]
        old_k, old_v = layer.k[:, :, :start].copy(), layer.v[:, :, :start].copy()
        layer.write(start, k, v)
        return old_k, old_v  # (B, Hkv, start, D) each

    def _mask(self, tq: int, tk: int) -> np.ndarray:
        return np.ones((tq, tk), bool) if self.stale else super()._mask(tq, tk)  # (Tq, Tk)


class SharedLayerCache(NumpyDecoder):
    """Every layer reads and writes layer 0's cache."""

    def _layer_cache(self, cache: DecoderCache, i: int) -> NumpyKVCache:
        return cache.layers[0]


class ForgetsLastPrefillToken(NumpyDecoder):
    """Prefill records one token fewer, so the first decode overwrites the prompt's last token."""

    def prefill(self, tokens: np.ndarray) -> tuple[np.ndarray, DecoderCache]:
        logits, cache = super().prefill(tokens)
        cache.length -= 1
        return logits, cache


class UnmaskedChunk(NumpyDecoder):
    """Decode drops the causal mask (right for one token): a chunk's tokens see their future."""

    def _mask(self, tq: int, tk: int) -> np.ndarray:
        return np.ones((tq, tk), bool) if tk > tq else super()._mask(tq, tk)  # (Tq, Tk)


class FirstRowCache(NumpyDecoder):
    """Decode reads batch row 0's cached keys and values for every row."""

    def _keys_values(
        self, cache: DecoderCache | None, i: int, start: int, k: np.ndarray, v: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        keys, values = super()._keys_values(cache, i, start, k, v)  # (B, Hkv, Tk, D) each
        if start == 0:
            return keys, values
        keys = np.concatenate([keys[:1, :, :start]] * k.shape[0])  # (B, Hkv, start, D)
        values = np.concatenate([values[:1, :, :start]] * k.shape[0])  # (B, Hkv, start, D)
        return np.concatenate([keys, k], 2), np.concatenate([values, v], 2)  # (B, Hkv, Tk, D)


class InterleavedRope(NumpyDecoder):
    """RoPE rotates adjacent pairs (2j, 2j+1) instead of (j, j + D/2): consistent, but another model."""

    def _rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        d = x.shape[-1]
        perm = np.concatenate([np.arange(0, d, 2), np.arange(1, d, 2)])  # (D,)
        back = np.argsort(perm)  # (D,)
        return super()._rope(x[..., perm], positions)[..., back]  # (B, H, T, D)


Build = Callable[[DecoderConfig, Mapping[str, np.ndarray]], NumpyDecoder]


def decoder_mutant(
    name: str, bug: str, kills: tuple[str, ...], model: type[NumpyDecoder]
) -> Mutant:
    """A mutant whose only op is `decoder`, building `model` instead of the numpy decoder."""
    build: Build = model
    return Mutant(name, bug, derive(base, f"mutant-{name}", decoder=build), kills)


MUTANTS = [
    decoder_mutant(
        "rope-restarts",
        "RoPE positions restart at 0 for each decode step",
        ("DEC-CACHED-EQ-FULL", "DEC-GREEDY-EQ"),
        RopeRestarts,
    ),
    decoder_mutant(
        "cache-after-attention",
        "decode writes the cache after attending, so the new token does not see itself",
        ("DEC-CACHED-EQ-FULL",),
        CacheAfterAttention,
    ),
    decoder_mutant(
        "shared-layer-cache",
        "every layer uses layer 0's cache",
        ("DEC-CACHED-EQ-FULL",),
        SharedLayerCache,
    ),
    decoder_mutant(
        "forgets-last-prefill-token",
        "decode overwrites the last prefill token (cache length off by one after prefill)",
        ("DEC-CACHED-EQ-FULL", "DEC-CHUNKED-PREFILL"),
        ForgetsLastPrefillToken,
    ),
    decoder_mutant(
        "unmasked-chunk",
        "decode applies no causal mask, so a multi-token chunk sees its own future",
        ("DEC-CHUNKED-PREFILL",),
        UnmaskedChunk,
    ),
    decoder_mutant(
        "first-row-cache",
        "decode reads batch row 0's cache for every row",
        ("DEC-BATCH-INDEP",),
        FirstRowCache,
    ),
    decoder_mutant(
        "decode-positions-wrap-256",
        "decode steps take RoPE positions modulo 256 (a power-of-two position table)",
        ("DEC-CACHED-EQ-FULL",),
        DecodePositionsWrap,
    ),
    decoder_mutant(
        "positions-wrap-256",
        "every position is taken modulo 256: the cached and full paths agree, the model is wrong",
        ("DEC-CROSS-IMPL",),
        PositionsWrap,
    ),
    decoder_mutant(
        "interleaved-rope",
        "RoPE pairs adjacent features instead of the two halves: self-consistent, wrong model",
        ("DEC-CROSS-IMPL",),
        InterleavedRope,
    ),
]


def bf16_positions_rope() -> Mutant:
    """The torch decoder with RoPE angles computed from positions rounded to bfloat16 (exact
    up to 256, then steps of 2, 4, ...): every long-context model in bf16 that builds its
    position ids in the model dtype. Only in half precision and past 256 tokens."""
    import torch

    import attnspec.implementations.torch_impl as torch_impl
    from attnspec.implementations.torch_impl.decoder import TorchDecoder

    class Bf16PositionsRope(TorchDecoder):
        def __init__(self, config: DecoderConfig, weights: Mapping[str, Any]) -> None:
            super().__init__(config, weights)
            hd = config.head_dim
            inv_freq = config.rope_base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
            positions = torch.arange(config.max_len).to(torch.bfloat16).to(torch.float64)
            angles = positions[:, None] * inv_freq[None, :]  # (max_len, D/2)
            self.cos = torch.cat([angles.cos()] * 2, dim=-1).to(self.device, self.rope_dtype)
            self.sin = torch.cat([angles.sin()] * 2, dim=-1).to(self.device, self.rope_dtype)

    build: Any = Bf16PositionsRope
    impl = torch_impl.impl
    name = "bf16-positions-rope"
    ops = {"asarray": impl.asarray, "to_numpy": impl.to_numpy, "dtypes": impl.dtypes}
    return Mutant(
        name,
        "RoPE angles from positions rounded to bfloat16 (the torch decoder, in bfloat16)",
        SimpleNamespace(name=f"mutant-{name}", decoder=build, **ops),
        ("DEC-CROSS-IMPL",),
        dtype="bfloat16",
    )


if importlib.util.find_spec("torch") is not None:  # a torch-only mutant: without torch it drops
    MUTANTS.append(bf16_positions_rope())
