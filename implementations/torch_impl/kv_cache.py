"""The KV cache in torch: buffers allocated once on the device and written in place."""

from __future__ import annotations

import torch

from attnspec.implementations.kv_base import PreallocatedKVCache
from attnspec.implementations.torch_impl.dtypes import TORCH_DTYPES


class TorchKVCache(PreallocatedKVCache):
    """PreallocatedKVCache over torch tensors on one device."""

    def __init__(
        self,
        batch: int,
        kv_heads: int,
        head_dim: int,
        max_len: int,
        dtype: str | torch.dtype,
        device: str | torch.device,
    ) -> None:
        self.device = torch.device(device)
        super().__init__(batch, kv_heads, head_dim, max_len, dtype)

    def allocate(self, shape: tuple[int, int, int, int], dtype: str | torch.dtype) -> torch.Tensor:
        torch_dtype = TORCH_DTYPES[dtype] if isinstance(dtype, str) else dtype
        return torch.zeros(shape, dtype=torch_dtype, device=self.device)  # (B, Hkv, T, D)

    def store(self, buffer: torch.Tensor, start: int, values: torch.Tensor) -> None:
        buffer[:, :, start : start + values.shape[2]].copy_(values)
