"""KV-cache mutants: caches that overwrite, drop, reorder, wrap or miscount."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

import attnspec.implementations.numpy_impl as base
from attnspec.implementations.kv_base import CacheFull
from attnspec.implementations.numpy_impl.kv_cache import NumpyKVCache
from attnspec.suite.meta.mutants import Mutant, derive


class OverwriteLastSlot(NumpyKVCache):
    """Single-token appends after the first write land on the last filled slot."""

    def store(self, buffer: np.ndarray, start: int, values: np.ndarray) -> None:
        shift = 1 if values.shape[2] == 1 and start > 0 else 0
        super().store(buffer, start - shift, values)


class DropFirstOfLaterChunks(NumpyKVCache):
    """A chunk appended after the first loses its first token (a classic off-by-one on resume)."""

    def store(self, buffer: np.ndarray, start: int, values: np.ndarray) -> None:
        if start > 0 and values.shape[2] > 1:
            super().store(buffer, start, values[:, :, 1:])
            buffer[:, :, start + values.shape[2] - 1] = 0
        else:
            super().store(buffer, start, values)


class Prepend(NumpyKVCache):
    """New tokens go in front of the old ones."""

    def append(self, k: np.ndarray, v: np.ndarray) -> tuple[Any, Any]:
        t, n = k.shape[2], self.length
        if n + t > self.max_len:
            return super().append(k, v)
        self.k[:, :, t : t + n] = self.k[:, :, :n].copy()
        self.v[:, :, t : t + n] = self.v[:, :, :n].copy()
        self.k[:, :, :t], self.v[:, :, :t] = k, v
        self.length += t
        return self.k[:, :, : self.length], self.v[:, :, : self.length]


class WrapAround(NumpyKVCache):
    """A ring buffer: past max_len it overwrites the oldest tokens instead of raising."""

    def append(self, k: np.ndarray, v: np.ndarray) -> tuple[Any, Any]:
        for i in range(k.shape[2]):
            pos = self.length % self.max_len
            self.k[:, :, pos], self.v[:, :, pos] = k[:, :, i], v[:, :, i]
            self.length += 1
        self.length = min(self.length, self.max_len)
        return self.k[:, :, : self.length], self.v[:, :, : self.length]


class WrapThenRaise(NumpyKVCache):
    """Past max_len it writes the overflow from slot 0 onward, then raises: the error is right,
    but the oldest tokens are already gone."""

    def append(self, k: np.ndarray, v: np.ndarray) -> tuple[Any, Any]:
        if self.length + k.shape[2] <= self.max_len:
            return super().append(k, v)
        for i in range(k.shape[2]):
            pos = (self.length + i) % self.max_len
            self.k[:, :, pos], self.v[:, :, pos] = k[:, :, i], v[:, :, i]
        raise CacheFull(f"KV cache full: {self.length} + {k.shape[2]} > max_len {self.max_len}")


class Truncate(NumpyKVCache):
    """Past max_len it silently keeps only the tokens that fit."""

    def append(self, k: np.ndarray, v: np.ndarray) -> tuple[Any, Any]:
        room = self.max_len - self.length
        if room <= 0:
            return self.k[:, :, : self.length], self.v[:, :, : self.length]
        return super().append(k[:, :, :room], v[:, :, :room])


class CountsOnlyKeys(NumpyKVCache):
    """nbytes forgets the V buffer."""

    @property
    def nbytes(self) -> int:
        return int(self.k.nbytes)


class CountsFilledLength(NumpyKVCache):
    """nbytes counts the filled tokens, not the allocation."""

    @property
    def nbytes(self) -> int:
        return int(2 * self.k[:, :, : max(self.length, 1)].nbytes)


class PowerOfTwoRing(NumpyKVCache):
    """Writes position p at slot p % 1024 (a ring sized to a power of two): right up to 1024
    tokens, then the newest overwrite the oldest and the cache hands back the wrong keys."""

    RING = 1024

    def store(self, buffer: np.ndarray, start: int, values: np.ndarray) -> None:
        slots = (start + np.arange(values.shape[2])) % self.RING  # (t,)
        buffer[:, :, slots] = values


class SharedByShape(NumpyKVCache):
    """Caches of the same shape share one buffer pair (storage pooled by shape, never by owner)."""

    pool: ClassVar[dict[tuple[object, ...], np.ndarray]] = {}

    def allocate(self, shape: tuple[int, int, int, int], dtype: str | np.dtype) -> np.ndarray:
        key = (shape, str(dtype), "v" if (shape, str(dtype), "k") in self.claimed else "k")
        self.claimed.add(key)
        if key not in self.pool:
            self.pool[key] = super().allocate(shape, dtype)
        return self.pool[key]

    def __init__(self, *args: Any) -> None:
        self.claimed: set[tuple[object, ...]] = set()
        super().__init__(*args)


def cache_mutant(name: str, bug: str, cls: type, kills: tuple[str, ...]) -> Mutant:
    """A mutant whose kv_cache builds `cls`; its attention is the healthy numpy one."""
    impl = derive(base, f"mutant-{name}", kv_cache=cls, attention=base.attention)
    return Mutant(name, bug, impl, kills)


MUTANTS = [
    cache_mutant(
        "overwrite-last-slot",
        "decode appends overwrite the last cached token instead of adding one",
        OverwriteLastSlot,
        ("KV-DECODE-EQ-RECOMPUTE", "KV-APPEND-ONLY"),
    ),
    cache_mutant(
        "drop-first-of-chunk",
        "a chunk appended after the first loses its first token",
        DropFirstOfLaterChunks,
        ("KV-CHUNKED-PREFILL", "KV-APPEND-ONLY"),
    ),
    cache_mutant(
        "prepend", "new tokens are stored before the old ones", Prepend, ("KV-APPEND-ONLY",)
    ),
    cache_mutant(
        "wrap-around",
        "a full cache overwrites its oldest tokens instead of raising",
        WrapAround,
        ("KV-CAPACITY",),
    ),
    cache_mutant(
        "wrap-then-raise",
        "a full cache writes the overflow over its oldest tokens and only then raises",
        WrapThenRaise,
        ("KV-CAPACITY",),
    ),
    cache_mutant(
        "truncate",
        "a full cache silently drops the tokens that do not fit",
        Truncate,
        ("KV-CAPACITY",),
    ),
    cache_mutant("bytes-k-only", "nbytes counts K but not V", CountsOnlyKeys, ("KV-BYTES",)),
    cache_mutant(
        "pow2-ring-1024",
        "past 1024 tokens the cache writes position p at slot p % 1024, over the oldest tokens",
        PowerOfTwoRing,
        ("KV-APPEND-ONLY", "KV-DECODE-EQ-RECOMPUTE"),
    ),
    cache_mutant(
        "shared-by-shape",
        "two caches of the same shape share one buffer, so filling one overwrites the other",
        SharedByShape,
        ("KV-APPEND-ONLY",),
    ),
    cache_mutant(
        "bytes-filled",
        "nbytes counts the filled tokens instead of the allocation",
        CountsFilledLength,
        ("KV-BYTES",),
    ),
]
