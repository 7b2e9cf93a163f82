"""The torch implementation: fast paths that stay correct, on any device torch offers.

`impl` is the implementation object; `impl.on_device("cuda")` gives one on another device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from attnspec.implementations.torch_impl import attention as _attention
from attnspec.implementations.torch_impl import decoder as _decoder
from attnspec.implementations.torch_impl import linear as _linear
from attnspec.implementations.torch_impl import matmul as _matmul
from attnspec.implementations.torch_impl import merge as _merge
from attnspec.implementations.torch_impl import rope as _rope
from attnspec.implementations.torch_impl import serving as _serving
from attnspec.implementations.torch_impl import tiled as _tiled
from attnspec.implementations.torch_impl.dtypes import TORCH_DTYPES
from attnspec.implementations.torch_impl.kv_cache import TorchKVCache
from attnspec.implementations.torch_impl.masking import OPTIONS


def default_device() -> str:
    """cuda when torch sees a GPU, else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"


class TorchImplementation:
    """The torch ops bound to one device."""

    name = "torch"
    dtypes = tuple(TORCH_DTYPES)
    options = OPTIONS  # window, softcap, lse and empty rows on every attention op

    def __init__(self, device: str = "cpu") -> None:
        self.device = torch.device(device)

    def on_device(self, device: str) -> TorchImplementation:
        """The same implementation on another device."""
        return TorchImplementation(device)

    def asarray(self, x: np.ndarray, dtype: str) -> torch.Tensor:
        """A tensor copy of `x` in `dtype` on this implementation's device; "int64" for tokens,
        "int32" for offsets, block tables and slots."""
        ints = {"int64": torch.int64, "int32": torch.int32}
        torch_dtype = ints.get(dtype) or TORCH_DTYPES.get(dtype)
        if torch_dtype is None:
            raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(TORCH_DTYPES)}")
        return torch.tensor(np.asarray(x), dtype=torch_dtype, device=self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        """A numpy copy on the host; bfloat16 comes back as float32 (numpy has no bfloat16)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        x = x.detach().cpu()
        wide = x.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2)
        return (x.float() if wide else x).numpy()  # float8 pages too: exact in float32

    attention = staticmethod(_attention.attention)
    matmul = staticmethod(_matmul.matmul)
    tiled_attention = staticmethod(_tiled.tiled_attention)
    linear_attention = staticmethod(_linear.linear_attention)
    linear_attention_recurrent = staticmethod(_linear.linear_attention_recurrent)
    linear_attention_chunked = staticmethod(_linear.linear_attention_chunked)
    decoder = staticmethod(_decoder.decoder)
    varlen_attention = staticmethod(_serving.varlen_attention)
    paged_kv_write = staticmethod(_serving.paged_kv_write)
    paged_attention = staticmethod(_serving.paged_attention)
    rope = staticmethod(_rope.rope)
    merge_attention_states = staticmethod(_merge.merge_attention_states)

    def paged_kv_cache(
        self,
        num_blocks: int,
        block_size: int,
        kv_heads: int,
        head_dim: int,
        dtype: str,
        *,
        v_head_dim: int | None = None,
        kv_dtype: str | None = None,
        k_scale: Any = None,
        v_scale: Any = None,
    ) -> _serving.TorchPagedKVCache:
        """A block pool allocated on this implementation's device (values of v_head_dim; with
        kv_dtype, 8-bit pages meaning code × k_scale / v_scale, per tensor or per kv head)."""
        return _serving.TorchPagedKVCache(
            num_blocks, block_size, kv_heads, head_dim, dtype, self.device, v_head_dim,
            kv_dtype, k_scale, v_scale,
        )  # fmt: skip

    def kv_cache(
        self, batch: int, kv_heads: int, head_dim: int, max_len: int, dtype: str
    ) -> TorchKVCache:
        """A cache preallocated on this implementation's device."""
        return TorchKVCache(batch, kv_heads, head_dim, max_len, dtype, str(self.device))


impl = TorchImplementation(default_device())
