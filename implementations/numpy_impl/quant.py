"""A quantized paged KV cache in numpy: 8-bit pages (ml_dtypes' float8 types, or int8) with a
scale per tensor or per KV head.

A write stores saturate(round(x / scale)): clamped to ±max, then cast (ml_dtypes rounds to
nearest even; np.rint does for int8). A read gives code × scale in the query's dtype.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from attnspec.implementations.quant_base import MAX


def storage(kv_dtype: str) -> np.dtype:
    """The numpy dtype of pages in `kv_dtype`."""
    return np.dtype(np.int8 if kv_dtype == "int8" else getattr(ml_dtypes, kv_dtype))


def quantize(x: np.ndarray, kv_dtype: str, scale: np.ndarray) -> np.ndarray:
    """x (T, Hkv, D) as codes: saturate(round(x / scale)) with scale (Hkv,), in `kv_dtype`."""
    wide = x.astype(np.promote_types(x.dtype, np.float32))  # float16 can't hold x / 1e-3
    y = np.clip(wide / scale[:, None], -MAX[kv_dtype], MAX[kv_dtype])
    return (np.rint(y) if kv_dtype == "int8" else y).astype(storage(kv_dtype))


def dequantize(codes: np.ndarray, scale: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Codes (T, Hkv, D) as values code × scale (Hkv,), rounded once to `dtype`."""
    return (codes.astype(np.float64) * scale[:, None].astype(np.float64)).astype(dtype)
