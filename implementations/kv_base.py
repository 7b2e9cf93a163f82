"""A KV cache preallocated to max_len and written in place (gpt-fast style), array-library neutral.

Subclasses say how to allocate a buffer and how to copy into a slice of it; the bookkeeping,
the shape checks and the overflow error live here once. The op-level `kv_cache` appends; the
decoders keep one cache per layer and write at the position their own `DecoderCache` tracks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from attnspec.implementations.validate import check_positive


class CacheFull(OverflowError):
    """Writing would pass max_len: raised before anything is written."""


class PreallocatedKVCache:
    """K and V buffers (B, Hkv, max_len, D); `append` fills them in order and returns views."""

    def __init__(self, batch: int, kv_heads: int, head_dim: int, max_len: int, dtype: Any) -> None:
        check_positive(batch=batch, kv_heads=kv_heads, head_dim=head_dim, max_len=max_len)
        self.shape = (batch, kv_heads, max_len, head_dim)  # (B, Hkv, T_max, D)
        self.dtype = dtype
        self.k = self.allocate(self.shape, dtype)  # (B, Hkv, T_max, D)
        self.v = self.allocate(self.shape, dtype)  # (B, Hkv, T_max, D)
        self.length = 0

    def allocate(self, shape: tuple[int, int, int, int], dtype: Any) -> Any:
        raise NotImplementedError

    def store(self, buffer: Any, start: int, values: Any) -> None:
        raise NotImplementedError

    @property
    def max_len(self) -> int:
        return self.shape[2]

    def __len__(self) -> int:
        return self.length

    @property
    def nbytes(self) -> int:
        """Bytes held by the K and V buffers: 2 * B * Hkv * max_len * D * E."""
        return int(self.k.nbytes + self.v.nbytes)

    def write(self, start: int, k: Any, v: Any) -> tuple[Any, Any]:
        """Store k, v (B, Hkv, t, D) at positions start..; return all keys and values up to there."""
        B, Hkv, T_max, D = self.shape
        t = int(k.shape[2]) if k.ndim == 4 else -1
        for name, x in (("k", k), ("v", v)):
            if tuple(x.shape) != (B, Hkv, t, D) or t < 1:
                raise ValueError(
                    f"expected {name} of shape ({B}, {Hkv}, t >= 1, {D}); got {tuple(x.shape)}"
                )
        if start + t > T_max:
            raise CacheFull(f"KV cache full: {start} cached + {t} new tokens > max_len {T_max}")
        self.store(self.k, start, k)
        self.store(self.v, start, v)
        return self.k[:, :, : start + t], self.v[:, :, : start + t]  # (B, Hkv, T, D) views

    def append(self, k: Any, v: Any) -> tuple[Any, Any]:
        """Write k, v (B, Hkv, t, D) after the cached tokens; return all cached keys and values."""
        keys, values = self.write(self.length, k, v)
        self.length += int(k.shape[2])
        return keys, values


class DecoderCache:
    """One cache per layer plus the number of tokens cached so far (the RoPE offset)."""

    def __init__(self, layers: Sequence[PreallocatedKVCache], batch: int) -> None:
        self.layers = layers
        self.batch = batch
        self.max_len = layers[0].max_len
        self.length = 0

    def __len__(self) -> int:
        return self.length

    @property
    def nbytes(self) -> int:
        """Bytes allocated for K and V in every layer (the whole max_len capacity)."""
        return sum(layer.nbytes for layer in self.layers)
