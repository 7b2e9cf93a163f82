"""Float64 reference of a quantized KV cache: what an 8-bit page must hold, and what it means.

A page stores `saturate(round(x / scale))` on the storage type's grid: round-to-nearest-even
onto the finite values of float8_e4m3fn (max 448), float8_e5m2 (max 57344) or int8 (symmetric,
max 127), clamped to ±max first, so no finite input becomes NaN or Inf. It means `code × scale`.
`scale` is per tensor (a float) or per KV head ((Hkv,), along the head axis of (T, Hkv, D)).
The grids come from ml_dtypes (numpy's float8 types), listed value by value, so the rounding
here is plain nearest-neighbour arithmetic on float64, independent of any cast.
"""

from __future__ import annotations

from functools import cache

import ml_dtypes
import numpy as np

KV_DTYPES = ("float8_e4m3fn", "float8_e5m2", "int8")
MAX = {"float8_e4m3fn": 448.0, "float8_e5m2": 57344.0, "int8": 127.0}
MANTISSA_BITS = {"float8_e4m3fn": 3, "float8_e5m2": 2}
SMALLEST = {"float8_e4m3fn": 2.0**-9, "float8_e5m2": 2.0**-16, "int8": 1.0}  # grid step near 0


@cache
def grid(kv_dtype: str) -> np.ndarray:
    """Every finite value of the storage type, ascending, as float64 (int8: -127..127)."""
    if kv_dtype == "int8":
        return np.arange(-127.0, 128.0)
    codes = np.arange(256, dtype=np.uint8).view(getattr(ml_dtypes, kv_dtype))
    values = codes.astype(np.float64)
    return np.unique(values[np.isfinite(values)])  # -0 and +0 merge


def round_to_grid(y: np.ndarray, kv_dtype: str) -> np.ndarray:
    """Round-to-nearest-even of y onto the grid of `kv_dtype`, saturating at ±max (float64).

    Neighbouring grid values alternate in the parity of their last mantissa bit (int8: of the
    integer), counted from zero, so a tie goes to the neighbour an even number of steps from 0.
    """
    g = grid(kv_dtype)
    zero = int(np.searchsorted(g, 0.0))
    y = np.clip(np.asarray(y, np.float64), g[0], g[-1])
    i = np.clip(np.searchsorted(g, y), 1, g.size - 1)  # g[i-1] < y <= g[i]
    lo, hi = g[i - 1], g[i]
    below, above = y - lo, hi - y
    even_hi = (np.abs(i - zero) % 2) == 0
    up = (above < below) | ((above == below) & even_hi)
    return np.where(up, hi, lo)


def per_head(scale: float | np.ndarray, Hkv: int) -> np.ndarray:
    """A per-tensor or per-KV-head scale as (Hkv,) float64."""
    s = np.asarray(scale, np.float64)
    return np.full(Hkv, float(s)) if s.ndim == 0 else s.reshape(Hkv)


def quantize(x: np.ndarray, kv_dtype: str, scale: float | np.ndarray) -> np.ndarray:
    """The codes a page stores for x (T, Hkv, D): saturate(round(x / scale)), float64."""
    s = per_head(scale, x.shape[-2])[:, None]  # (Hkv, 1)
    return round_to_grid(np.asarray(x, np.float64) / s, kv_dtype)


def dequantize(codes: np.ndarray, scale: float | np.ndarray) -> np.ndarray:
    """What stored codes (T, Hkv, D) mean: code × scale, float64."""
    return np.asarray(codes, np.float64) * per_head(scale, codes.shape[-2])[:, None]


def half_step(x: np.ndarray, kv_dtype: str, scale: float | np.ndarray) -> np.ndarray:
    """The largest error rounding x (T, Hkv, D) may make when x / scale lies inside ±max: half a
    grid step, that is |x|·2^-(m+1) for a normal fp8 value (m mantissa bits), half the smallest
    step near zero (subnormals), and scale / 2 for int8."""
    s = per_head(scale, x.shape[-2])[:, None]  # (Hkv, 1)
    floor = s * SMALLEST[kv_dtype] / 2
    if kv_dtype == "int8":
        return np.broadcast_to(floor, x.shape).astype(np.float64)
    return np.maximum(np.abs(x) * 2.0 ** -(MANTISSA_BITS[kv_dtype] + 1), floor)
