"""The KV cache in numpy: preallocated buffers written in place."""

from __future__ import annotations

import numpy as np

from attnspec.implementations.kv_base import PreallocatedKVCache


class NumpyKVCache(PreallocatedKVCache):
    """PreallocatedKVCache over numpy arrays."""

    def allocate(self, shape: tuple[int, int, int, int], dtype: str | np.dtype) -> np.ndarray:
        return np.zeros(shape, dtype=np.dtype(dtype))  # (B, Hkv, T_max, D)

    def store(self, buffer: np.ndarray, start: int, values: np.ndarray) -> None:
        buffer[:, :, start : start + values.shape[2]] = values


def kv_cache(batch: int, kv_heads: int, head_dim: int, max_len: int, dtype: str) -> NumpyKVCache:
    """A cache for `batch` sequences of up to `max_len` tokens with `kv_heads` heads of `head_dim`."""
    return NumpyKVCache(batch, kv_heads, head_dim, max_len, dtype)
