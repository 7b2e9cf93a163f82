"""RoPE mutants: the rotary bugs engines keep re-discovering, each a switch on one numpy rope."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np

import attnspec.implementations.numpy_impl as base
from attnspec.specs.dtypes import round_to
from attnspec.suite.meta.mutants import Mutant, derive

CACHE_POSITIONS = 4096  # a cos/sin cache built for this many positions


def frequencies(
    r: int, theta: float, scaling: Any, *, bands_swapped: bool = False, linear_times: bool = False
) -> np.ndarray:
    """f_i (r/2,), optionally with Llama 3's high and low bands swapped (the factor applied to
    the short wavelengths) or linear scaling multiplying instead of dividing."""
    f = theta ** (-np.arange(0, r, 2, dtype=np.float64) / r)  # (r/2,)
    if scaling is None:
        return f
    if scaling[0] == "linear":
        return f * scaling[1] if linear_times else f / scaling[1]
    factor, lo, hi, L = (float(v) for v in scaling[1:])
    wavelen = 2 * math.pi / f  # (r/2,)
    s = (L / wavelen - lo) / (hi - lo)  # (r/2,)
    blended = (1 - s) * f / factor + s * f  # (r/2,)
    short, long = wavelen < L / hi, wavelen > L / lo  # (r/2,) each
    if bands_swapped:
        short, long = long, short
    return np.where(short, f, np.where(long, f / factor, blended))


@np.errstate(over="ignore", invalid="ignore")  # a float16 phase past 65504 is inf: the bug
def broken_rope(
    x: np.ndarray,
    positions: np.ndarray,
    *,
    base: float = 10000.0,
    rotary_dim: int | None = None,
    style: str = "neox",
    scaling: Any = None,
    phase: str = "float64",
    cache: int | None = None,
    swap_styles: bool = False,
    ignore_rotary_dim: bool = False,
    arange: bool = False,
    **freq: bool,
) -> np.ndarray:
    """numpy rope with one switchable bug: the phase rounded to `phase` (or to x's dtype when
    phase is "input"), positions looked up in a cos/sin cache of `cache` entries modulo its
    size, the styles swapped, rotary_dim ignored, positions taken as arange(T), or a frequency
    bug (`freq`)."""
    T, _, D = x.shape
    r = D if rotary_dim is None or ignore_rotary_dim else rotary_dim
    if swap_styles:
        style = "gptj" if style == "neox" else "neox"
    p = np.arange(T) if arange else positions.astype(np.int64)  # (T,)
    if cache is not None:
        p = p % cache
    f = frequencies(r, base, scaling, **freq)  # (r/2,)
    precision = str(x.dtype) if phase == "input" else phase
    p = round_to(p.astype(np.float64), precision)  # (T,)
    theta = round_to(p[:, None] * round_to(f, precision)[None, :], precision)  # (T, r/2)
    cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]  # (T, 1, r/2)
    half = np.arange(r // 2)
    a, b = (half, half + r // 2) if style == "neox" else (2 * half, 2 * half + 1)
    xa, xb = x[..., a].astype(np.float64), x[..., b].astype(np.float64)  # (T, H, r/2)
    out = x.copy()  # (T, H, D)
    out[..., a] = xa * cos - xb * sin
    out[..., b] = xb * cos + xa * sin
    return out


def rope_mutant(name: str, bug: str, kills: tuple[str, ...], dtype: str = "float32", **switch: Any):
    impl = derive(base, f"mutant-{name}", rope=partial(broken_rope, **switch))
    return Mutant(name, bug, impl, kills, dtype)


MUTANTS = [
    rope_mutant(
        "rope-bf16-phase",
        "computes position × frequency in bfloat16 (autocast around the rotary matmul)",
        ("ROPE-REF", "ROPE-RELATIVE"),
        phase="bfloat16",
    ),
    rope_mutant(
        "rope-phase-in-input-dtype",
        "computes the phase in x's own dtype: right in float32, broken in float16",
        ("ROPE-REF", "ROPE-RELATIVE"),
        dtype="float16",
        phase="input",
    ),
    rope_mutant(
        "rope-cache-4096",
        "reads cos/sin from a cache of 4,096 positions, indexed modulo its size",
        ("ROPE-REF", "ROPE-RELATIVE"),
        cache=CACHE_POSITIONS,
    ),
    rope_mutant(
        "rope-styles-swapped",
        "rotates gptj pairs when asked for neox and neox pairs when asked for gptj",
        ("ROPE-STYLES", "ROPE-NORM"),
        swap_styles=True,
    ),
    rope_mutant(
        "rope-rotary-dim-ignored",
        "rotates the whole head, ignoring a partial rotary_dim",
        ("ROPE-NORM", "ROPE-REF"),
        ignore_rotary_dim=True,
    ),
    rope_mutant(
        "rope-positions-arange",
        "turns token t by t (arange) instead of by its own position",
        ("ROPE-POSITIONS", "ROPE-REF"),
        arange=True,
    ),
    rope_mutant(
        "rope-llama3-bands-swapped",
        "divides the short wavelengths by Llama 3's factor and keeps the long ones",
        ("ROPE-SCALING",),
        bands_swapped=True,
    ),
    rope_mutant(
        "rope-linear-times",
        "multiplies the frequencies by the linear factor instead of dividing",
        ("ROPE-SCALING",),
        linear_times=True,
    ),
]
