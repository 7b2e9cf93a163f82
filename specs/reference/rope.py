"""Float64 reference of rotary position embedding (RoPE): both interleavings, partial rotary
dims, and the linear and Llama-3 frequency scalings.

Sources: RoPE, Su et al. 2021 (RoFormer, eq. 34): feature pair i turns by the angle
position × base^(-2i/r), r the rotary dim. "gptj" pairs dims (2i, 2i+1) as the paper and
GPT-J do; "neox" pairs dims (i, i + r/2) as GPT-NeoX and Hugging Face Llama's rotate_half do.
Dims past r pass through. Linear scaling (position interpolation, Chen et al. 2023) divides
every frequency by the factor. Llama 3 (Meta's llama-models `apply_scaling`, transformers'
`_compute_llama3_parameters`): with wavelength λ_i = 2π/f_i and original context L,
λ_i < L/high_freq_factor keeps f_i, λ_i > L/low_freq_factor takes f_i/factor, and between them
f_i·((1 − s)/factor + s) with s = (L/λ_i − low_freq_factor)/(high_freq_factor − low_freq_factor).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from attnspec.specs.dtypes import round_to

STYLES = ("neox", "gptj")
Scaling = tuple[Any, ...] | None  # None, ("linear", factor), ("llama3", f, lo, hi, L)


def check_scaling(scaling: Scaling) -> None:
    """Raise ValueError unless `scaling` is None, ("linear", factor) or
    ("llama3", factor, low_freq_factor, high_freq_factor, original_max_position)."""
    if scaling is None:
        return
    kind = scaling[0] if isinstance(scaling, tuple) and scaling else None
    if kind == "linear" and len(scaling) == 2 and float(scaling[1]) > 0:
        return
    if kind == "llama3" and len(scaling) == 5:
        factor, low, high, L = (float(v) for v in scaling[1:])
        if factor > 0 and 0 < low < high and L > 0:
            return
    raise ValueError(
        f"scaling must be None, ('linear', factor) or ('llama3', factor, low_freq_factor, "
        f"high_freq_factor, original_max_position), got {scaling!r}"
    )


def inv_freq(rotary_dim: int, base: float, scaling: Scaling = None) -> np.ndarray:
    """Frequencies f_i (r/2,) in radians per position, scaled as `scaling` says."""
    check_scaling(scaling)
    f = base ** (-np.arange(0, rotary_dim, 2, dtype=np.float64) / rotary_dim)  # (r/2,)
    if scaling is None:
        return f
    if scaling[0] == "linear":
        return f / float(scaling[1])
    factor, lo, hi, L = (float(v) for v in scaling[1:])
    wavelen = 2 * math.pi / f  # (r/2,)
    s = (L / wavelen - lo) / (hi - lo)  # (r/2,)
    medium = (1 - s) * f / factor + s * f  # (r/2,)
    return np.where(wavelen < L / hi, f, np.where(wavelen > L / lo, f / factor, medium))


def pair_index(D: int, rotary_dim: int, style: str) -> tuple[np.ndarray, np.ndarray]:
    """The dims (first, second) of each rotated pair i: (i, i + r/2) or (2i, 2i + 1)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if rotary_dim % 2 or not 0 < rotary_dim <= D:
        raise ValueError(f"rotary_dim must be even and in (0, {D}], got {rotary_dim}")
    i = np.arange(rotary_dim // 2)  # (r/2,)
    return (i, i + rotary_dim // 2) if style == "neox" else (2 * i, 2 * i + 1)


def angles(positions: np.ndarray, f: np.ndarray, phase: str = "float64") -> np.ndarray:
    """position × f (T, r/2), each factor and the product rounded to `phase` (float32: what
    vLLM, Hugging Face and flash-attn compute; bfloat16 / float16: the classic bug)."""
    p = round_to(np.asarray(positions, np.float64), phase)  # (T,)
    return round_to(p[:, None] * round_to(f, phase)[None, :], phase)  # (T, r/2)


def rope(
    x: np.ndarray,
    positions: np.ndarray,
    *,
    base: float = 10000.0,
    rotary_dim: int | None = None,
    style: str = "neox",
    scaling: Scaling = None,
    phase: str = "float64",
) -> np.ndarray:
    """x (T, H, D) with each token's pairs turned by its own position × f_i, in float64.

    `phase` rounds the angles as computed in that precision (the rest stays float64).
    """
    x = np.asarray(x, np.float64)
    T, _, D = x.shape
    r = D if rotary_dim is None else rotary_dim
    a, b = pair_index(D, r, style)
    theta = angles(np.asarray(positions).reshape(T), inv_freq(r, base, scaling), phase)
    cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]  # (T, 1, r/2)
    out = x.copy()  # (T, H, D)
    out[..., a] = x[..., a] * cos - x[..., b] * sin
    out[..., b] = x[..., b] * cos + x[..., a] * sin
    return out
