"""Tiny Llama-style decoder in numpy with a preallocated per-layer KV cache.

The function is attnspec.specs.reference.decoder's (RMSNorm, rotate-half RoPE, GQA attention,
SwiGLU, tied or untied LM head); this file adds the cache: `prefill` fills it, `decode`
appends T >= 1 tokens at RoPE positions len(cache) .. len(cache) + T - 1 and attends
with the bottom-right causal mask (query i sees key j iff j <= i + start). Computation
runs in the weights' dtype (float32 for float16 weights); logits and the cache have the
weights' dtype.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from attnspec.implementations.decoder_base import CachedDecoder
from attnspec.implementations.kv_base import DecoderCache, PreallocatedKVCache
from attnspec.implementations.numpy_impl.kv_cache import NumpyKVCache
from attnspec.specs.decoder_weights import DecoderConfig, check_weights


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight  # (B, T, d)


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))  # (B, T, F)


class NumpyDecoder(CachedDecoder):
    """The model: forward (full recompute), prefill and decode (cached)."""

    def __init__(self, config: DecoderConfig, weights: Mapping[str, np.ndarray]) -> None:
        check_weights(config, weights)
        dtypes = {np.asarray(a).dtype for a in weights.values()}
        if len(dtypes) != 1 or not np.issubdtype(next(iter(dtypes)), np.floating):
            raise ValueError(
                f"weights must all share one floating dtype, got {sorted(map(str, dtypes))}"
            )
        self.config = config
        self.dtype = next(iter(dtypes))
        self.compute_dtype = np.result_type(self.dtype, np.float32)
        self.w = {name: np.asarray(a, dtype=self.compute_dtype) for name, a in weights.items()}
        hd = config.head_dim
        self.inv_freq = config.rope_base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)  # (D/2,)

    def new_cache(self, batch: int) -> DecoderCache:
        c = self.config
        layers = [
            NumpyKVCache(batch, c.n_kv_heads, c.head_dim, c.max_len, self.dtype)
            for _ in range(c.layers)
        ]
        return DecoderCache(layers, batch)

    def _check_tokens(self, tokens: np.ndarray, start: int) -> None:
        if (
            not isinstance(tokens, np.ndarray)
            or tokens.ndim != 2
            or not np.issubdtype(tokens.dtype, np.integer)
        ):
            raise ValueError(
                "tokens must be a 2-D integer np.ndarray (B, T), got "
                f"{type(tokens).__name__} {getattr(tokens, 'dtype', '')} {getattr(tokens, 'shape', '')}"
            )
        b, t = tokens.shape
        if b < 1 or t < 1:
            raise ValueError(f"tokens must have B >= 1 and T >= 1, got shape {tokens.shape}")
        if tokens.min() < 0 or tokens.max() >= self.config.vocab:
            raise ValueError(
                f"tokens must lie in [0, {self.config.vocab}), got [{tokens.min()}, {tokens.max()}]"
            )
        if start + t > self.config.max_len:
            raise ValueError(
                f"too many tokens: {start} cached + {t} new exceed max_len {self.config.max_len}"
            )

    def _positions(self, start: int, t: int) -> np.ndarray:
        return np.arange(start, start + t)  # (T,)

    def _rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        angles = positions[:, None] * self.inv_freq[None, :]  # (T, D/2)
        cos = np.concatenate([np.cos(angles)] * 2, axis=-1).astype(x.dtype)  # (T, D)
        sin = np.concatenate([np.sin(angles)] * 2, axis=-1).astype(x.dtype)  # (T, D)
        half = x.shape[-1] // 2
        rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)  # (B, H, T, D)
        return x * cos + rotated * sin  # (B, H, T, D)

    def _layer_cache(self, cache: DecoderCache, i: int) -> PreallocatedKVCache:
        return cache.layers[i]

    def _keys_values(
        self, cache: DecoderCache | None, i: int, start: int, k: np.ndarray, v: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Write the new K/V, then return all keys and values the new queries attend over."""
        if cache is None:
            return k, v
        return self._layer_cache(cache, i).write(start, k, v)  # (B, Hkv, Tk, D) each

    def _mask(self, tq: int, tk: int) -> np.ndarray:
        return np.arange(tk)[None, :] <= np.arange(tq)[:, None] + (tk - tq)  # (Tq, Tk)

    def _attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        hq, hkv, tq, d = q.shape[1], k.shape[1], q.shape[2], q.shape[3]
        k = np.repeat(k, hq // hkv, axis=1)  # (B, Hq, Tk, D)
        v = np.repeat(v, hq // hkv, axis=1)  # (B, Hq, Tk, D)
        s = q @ np.swapaxes(k, -1, -2) / np.sqrt(d)  # (B, Hq, Tq, Tk)
        s = np.where(self._mask(tq, k.shape[2]), s, -np.inf)  # (B, Hq, Tq, Tk)
        p = np.exp(s - s.max(axis=-1, keepdims=True))  # (B, Hq, Tq, Tk)
        return (p / p.sum(axis=-1, keepdims=True)) @ v  # (B, Hq, Tq, D)

    def _run(self, tokens: np.ndarray, cache: DecoderCache | None, start: int) -> np.ndarray:
        c, w = self.config, self.w
        b, t = tokens.shape
        hq, hkv, hd = c.n_heads, c.n_kv_heads, c.head_dim
        positions = self._positions(start, t)  # (T,)
        x = w["embed"][tokens]  # (B, T, d)
        for i in range(c.layers):
            p = f"layers.{i}."
            h = _rms_norm(x, w[p + "attn_norm"], c.norm_eps)  # (B, T, d)
            q = (h @ w[p + "wq"]).reshape(b, t, hq, hd).transpose(0, 2, 1, 3)  # (B, Hq, T, D)
            k = (h @ w[p + "wk"]).reshape(b, t, hkv, hd).transpose(0, 2, 1, 3)  # (B, Hkv, T, D)
            v = (h @ w[p + "wv"]).reshape(b, t, hkv, hd).transpose(0, 2, 1, 3)  # (B, Hkv, T, D)
            q, k = (
                self._rope(q, positions),
                self._rope(k, positions),
            )  # (B, Hq, T, D), (B, Hkv, T, D)
            keys, values = self._keys_values(cache, i, start, k, v)  # (B, Hkv, Tk, D) each
            o = (
                self._attention(q, keys, values).transpose(0, 2, 1, 3).reshape(b, t, hq * hd)
            )  # (B, T, Hq*D)
            x = x + o @ w[p + "wo"]  # (B, T, d)
            h = _rms_norm(x, w[p + "mlp_norm"], c.norm_eps)  # (B, T, d)
            x = (
                x + (_silu(h @ w[p + "w_gate"]) * (h @ w[p + "w_up"])) @ w[p + "w_down"]
            )  # (B, T, d)
        h = _rms_norm(x, w["final_norm"], c.norm_eps)  # (B, T, d)
        head = w["embed"].T if c.tied_embeddings else w["lm_head"]  # (d, vocab)
        return (h @ head).astype(self.dtype)  # (B, T, vocab)


def decoder(config: DecoderConfig, weights: Mapping[str, np.ndarray]) -> NumpyDecoder:
    """Build the tiny decoder from weights named as in attnspec.specs.decoder_weights.make_weights."""
    return NumpyDecoder(config, weights)
