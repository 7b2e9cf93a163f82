"""The numpy implementation: reference quality, float64 capable, written to be read.

The module itself is the implementation object: `name`, `asarray`, `to_numpy` and the ops.
"""

from __future__ import annotations

import numpy as np

from attnspec.implementations.numpy_impl.attention import attention
from attnspec.implementations.numpy_impl.decoder import decoder
from attnspec.implementations.numpy_impl.kv_cache import kv_cache
from attnspec.implementations.numpy_impl.linear import (
    linear_attention,
    linear_attention_chunked,
    linear_attention_recurrent,
)
from attnspec.implementations.numpy_impl.masking import OPTIONS as options
from attnspec.implementations.numpy_impl.matmul import matmul
from attnspec.implementations.numpy_impl.merge import merge_attention_states
from attnspec.implementations.numpy_impl.rope import rope
from attnspec.implementations.numpy_impl.serving import (
    paged_attention,
    paged_kv_cache,
    paged_kv_write,
    varlen_attention,
)
from attnspec.implementations.numpy_impl.tiled import tiled_attention

name = "numpy"
dtypes = ("float32", "float16", "float64")


def asarray(x: np.ndarray, dtype: str) -> np.ndarray:
    """A numpy copy of `x` in `dtype` (numpy has no bfloat16); "int64" is for token ids,
    "int32" for offsets, block tables and slots."""
    if dtype not in (*dtypes, "int64", "int32"):
        raise ValueError(f"numpy implementation supports {', '.join(dtypes)}, not {dtype!r}")
    return np.array(x, dtype=np.dtype(dtype))


def to_numpy(x: np.ndarray) -> np.ndarray:
    """The array itself; anything else is a misbehaving result."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(x).__name__}")
    return x


__all__ = [
    "asarray",
    "attention",
    "decoder",
    "dtypes",
    "kv_cache",
    "linear_attention",
    "linear_attention_chunked",
    "linear_attention_recurrent",
    "matmul",
    "merge_attention_states",
    "name",
    "options",
    "paged_attention",
    "paged_kv_cache",
    "paged_kv_write",
    "rope",
    "tiled_attention",
    "to_numpy",
    "varlen_attention",
]
