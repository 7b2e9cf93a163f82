"""The KV-cache op on a transformers StaticCache: buffers allocated up front, written in place.

StaticCache itself would write past its capacity (index_copy_ raises an IndexError deep in
torch, or on some devices writes nothing); the capacity is checked here before `update`, and
`append` returns only the filled part of the buffers.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LlamaConfig, StaticCache

from attnspec.implementations.kv_base import CacheFull
from attnspec.implementations.torch_impl.dtypes import TORCH_DTYPES
from attnspec.implementations.validate import check_positive

ONE_LAYER = LlamaConfig(num_hidden_layers=1)  # StaticCache reads only the layer count and types


class HFKVCache:
    """One StaticCache layer (B, Hkv, max_len, D); `append` fills it in order."""

    def __init__(
        self,
        batch: int,
        kv_heads: int,
        head_dim: int,
        max_len: int,
        dtype: str,
        device: torch.device,
    ) -> None:
        check_positive(batch=batch, kv_heads=kv_heads, head_dim=head_dim, max_len=max_len)
        if dtype not in TORCH_DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(TORCH_DTYPES)}")
        self.shape = (batch, kv_heads, max_len, head_dim)  # (B, Hkv, T_max, D)
        self.cache = StaticCache(config=ONE_LAYER, max_cache_len=max_len)
        self.cache.early_initialization(batch, kv_heads, head_dim, TORCH_DTYPES[dtype], device)
        self.layer: Any = self.cache.layers[0]  # a StaticLayer: keys, values (B, Hkv, T_max, D)

    def __len__(self) -> int:
        return int(self.cache.get_seq_length())

    @property
    def nbytes(self) -> int:
        """Bytes of the K and V buffers: 2 * B * Hkv * max_len * D * E."""
        return int(self.layer.keys.nbytes + self.layer.values.nbytes)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, Hkv, t, D) after the cached tokens; return all cached keys and values."""
        B, Hkv, T_max, D = self.shape
        t = int(k.shape[2]) if k.ndim == 4 else -1
        for name, x in (("k", k), ("v", v)):
            if tuple(x.shape) != (B, Hkv, t, D) or t < 1:
                raise ValueError(
                    f"expected {name} of shape ({B}, {Hkv}, t >= 1, {D}); got {tuple(x.shape)}"
                )
        n = len(self)
        if n + t > T_max:
            raise CacheFull(f"KV cache full: {n} cached + {t} new tokens > max_len {T_max}")
        keys, values = self.cache.update(k, v, 0)  # (B, Hkv, T_max, D) each
        return keys[:, :, : n + t], values[:, :, : n + t]  # (B, Hkv, n + t, D) views
