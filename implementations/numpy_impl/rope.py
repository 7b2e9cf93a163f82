"""Rotary position embedding in numpy: angles and rotation in float64, the result rounded to x's
dtype once. Each token turns by its own position (ragged batches give them unsorted and repeated).

Layouts: "neox" pairs dim i with i + r/2 (rotate_half), "gptj" pairs 2i with 2i + 1; dims past
rotary_dim r pass through. Scaling: ("linear", factor) divides every frequency by the factor;
("llama3", factor, low_freq_factor, high_freq_factor, original_max_position) keeps wavelengths
below L/high, divides those above L/low by the factor and blends the band between.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

STYLES = ("neox", "gptj")


def frequencies(r: int, base: float, scaling: tuple[Any, ...] | None) -> np.ndarray:
    """Radians per position of each rotated pair (r/2,), after the scaling."""
    f = 1.0 / base ** (np.arange(0, r, 2, dtype=np.float64) / r)  # (r/2,)
    if scaling is None:
        return f
    kind, *params = scaling
    if kind == "linear" and len(params) == 1:
        return f / float(params[0])
    if kind == "llama3" and len(params) == 4:
        factor, low, high, old_len = (float(p) for p in params)
        wavelen = 2 * math.pi / f  # (r/2,)
        smooth = (old_len / wavelen - low) / (high - low)  # (r/2,)
        blended = (1 - smooth) * f / factor + smooth * f  # (r/2,)
        low_band = np.where(wavelen > old_len / low, f / factor, blended)  # (r/2,)
        return np.where(wavelen < old_len / high, f, low_band)
    raise ValueError(
        f"unknown scaling {scaling!r}: None, ('linear', f) or ('llama3', f, lo, hi, L)"
    )


def rope(
    x: np.ndarray,
    positions: np.ndarray,
    *,
    base: float = 10000.0,
    rotary_dim: int | None = None,
    style: str = "neox",
    scaling: tuple[Any, ...] | None = None,
) -> np.ndarray:
    """x (T, H, D) rotated pair by pair by positions (T,) × frequencies; a new array, x's dtype."""
    T, _, D = x.shape
    r = D if rotary_dim is None else int(rotary_dim)
    if r % 2 or not 0 < r <= D:
        raise ValueError(f"rotary_dim must be even and in (0, {D}], got {rotary_dim}")
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if positions.shape != (T,):
        raise ValueError(f"positions must have shape ({T},), got {positions.shape}")
    theta = positions.astype(np.float64)[:, None] * frequencies(r, base, scaling)  # (T, r/2)
    cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]  # (T, 1, r/2)
    h = r // 2
    a, b = (slice(0, h), slice(h, r)) if style == "neox" else (slice(0, r, 2), slice(1, r, 2))
    xa, xb = x[..., a].astype(np.float64), x[..., b].astype(np.float64)  # (T, H, r/2)
    out = x.copy()  # (T, H, D)
    out[..., a] = xa * cos - xb * sin
    out[..., b] = xb * cos + xa * sin
    return out
