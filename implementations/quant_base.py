"""Argument checks for a quantized paged KV cache, shared by the shipped implementations.

`paged_kv_cache(..., kv_dtype, k_scale, v_scale)`: pages stored in float8_e4m3fn, float8_e5m2
or int8, each meaning code × scale, with a scale per tensor (a float) or per KV head ((Hkv,)).
"""

from __future__ import annotations

from typing import Any

import numpy as np

KV_DTYPES = ("float8_e4m3fn", "float8_e5m2", "int8")
MAX = {"float8_e4m3fn": 448.0, "float8_e5m2": 57344.0, "int8": 127.0}  # saturate here


def check_scales(
    kv_dtype: str | None, k_scale: Any, v_scale: Any, kv_heads: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """None for an unquantized pool (no scales allowed); else the scales as (Hkv,) float32
    host arrays, each positive and finite, from a float or a (Hkv,) array."""
    if kv_dtype is None:
        if k_scale is not None or v_scale is not None:
            raise ValueError("k_scale and v_scale need a kv_dtype")
        return None
    if kv_dtype not in KV_DTYPES:
        raise ValueError(f"kv_dtype must be one of {', '.join(KV_DTYPES)}, got {kv_dtype!r}")
    out = []
    for name, scale in (("k_scale", k_scale), ("v_scale", v_scale)):
        s = np.asarray(1.0 if scale is None else scale, np.float32)
        if s.ndim == 0:
            s = np.full(kv_heads, s, np.float32)
        if s.shape != (kv_heads,) or not (np.isfinite(s) & (s > 0)).all():
            raise ValueError(f"{name} must be a positive float or ({kv_heads},) of them, got {s}")
        out.append(s)
    return out[0], out[1]
