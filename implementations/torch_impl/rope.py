"""Rotary position embedding in torch, as serving kernels compute it: the phase position ×
frequency in float32 (float64 for float64 inputs), cos/sin and the rotation in that precision,
the result rounded to x's dtype once. The frequencies themselves are derived in float64 on the
host and rounded once. Each token turns by its own position.

Layouts: "neox" pairs dim i with i + r/2 (rotate_half), "gptj" pairs 2i with 2i + 1; dims past
rotary_dim r pass through. Scaling as in implementations/numpy_impl/rope.py.
"""

from __future__ import annotations

from typing import Any

import torch

from attnspec.implementations.numpy_impl.rope import STYLES, frequencies


def rope(
    x: torch.Tensor,
    positions: torch.Tensor,
    *,
    base: float = 10000.0,
    rotary_dim: int | None = None,
    style: str = "neox",
    scaling: tuple[Any, ...] | None = None,
) -> torch.Tensor:
    """x (T, H, D) rotated pair by pair by positions (T,) × frequencies; a new tensor."""
    T, _, D = x.shape
    r = D if rotary_dim is None else int(rotary_dim)
    if r % 2 or not 0 < r <= D:
        raise ValueError(f"rotary_dim must be even and in (0, {D}], got {rotary_dim}")
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if tuple(positions.shape) != (T,):
        raise ValueError(f"positions must have shape ({T},), got {tuple(positions.shape)}")
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    inv = torch.tensor(frequencies(r, base, scaling), dtype=work, device=x.device)  # (r/2,)
    theta = positions.to(work)[:, None] * inv[None, :]  # (T, r/2)
    cos, sin = theta.cos()[:, None, :], theta.sin()[:, None, :]  # (T, 1, r/2)
    xw = x.to(work)  # (T, H, D); x itself when it is float32 or float64
    out = torch.empty_like(xw)  # (T, H, D), written pair half by pair half: no temporaries
    h = r // 2
    if style == "neox":
        (x1, x2), (o1, o2) = ((y[..., :h], y[..., h:r]) for y in (xw, out))  # (T, H, r/2) each
    else:
        (x1, x2), (o1, o2) = ((y[..., 0:r:2], y[..., 1:r:2]) for y in (xw, out))
    torch.mul(x1, cos, out=o1).addcmul_(x2, sin, value=-1)  # x1·cos − x2·sin
    torch.mul(x2, cos, out=o2).addcmul_(x1, sin)  # x2·cos + x1·sin
    out[..., r:] = xw[..., r:]
    return out.to(x.dtype)  # (T, H, D)
