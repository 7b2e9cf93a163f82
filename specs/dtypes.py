"""Working dtypes, their unit roundoff, and rounding float64 data onto them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16", "float64")

# Unit roundoff u = 2^-p for p significand bits (incl. the implicit bit): IEEE 754, bfloat16.
UNIT_ROUNDOFF: dict[str, float] = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
}

BYTES_PER_ELEMENT: dict[str, int] = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}

# What `to_numpy` must hand back for each working dtype: numpy has no bfloat16, so float32.
EXCHANGE_DTYPE: dict[str, np.dtype] = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(np.float32),
}


def check_dtype(dtype: str) -> str:
    """Return `dtype` if it is a working dtype, else raise ValueError listing the choices."""
    if dtype not in UNIT_ROUNDOFF:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    return dtype


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """Round float64 values to the nearest `dtype` value (ties to even); return them as float64."""
    x = np.asarray(x, dtype=np.float64)
    if dtype == "float64":
        return x.copy()
    if dtype in ("float32", "float16"):
        return x.astype(dtype).astype(np.float64)
    if dtype == "bfloat16":
        bits = x.astype(np.float32).view(np.uint32)  # bfloat16 = the top 16 bits of a float32
        rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
        kept = np.where(np.isfinite(x), (bits + rounding) & np.uint32(0xFFFF0000), bits)
        return kept.astype(np.uint32).view(np.float32).astype(np.float64)
    raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b in the arrays' working dtype. numpy's float16 matmul has no BLAS: it sums each dot
    product in float32 and rounds it once. float32 BLAS, rounded once, computes the same (up to
    summation order: 1 ulp in 0.4% of the entries of a 4096-long product) 10-20x faster."""
    if a.dtype == np.float16 and b.dtype == np.float16:
        return np.matmul(a.astype(np.float32), b.astype(np.float32)).astype(np.float16)
    return np.matmul(a, b)


# The numpy dtype a plain computation in each working dtype runs in (bfloat16: float32, rounded).
WORK: dict[str, type] = {
    "float64": np.float64,
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": np.float32,
}


def stored(precision: str) -> Callable[[np.ndarray], np.ndarray]:
    """Round a value computed in WORK[precision] as storing it in `precision` would.

    numpy computes float16/float32 natively, so only bfloat16 needs explicit rounding.
    """
    work = WORK[precision]
    if precision != "bfloat16":
        return lambda x: x
    return lambda x: round_to(x, "bfloat16").astype(work)
