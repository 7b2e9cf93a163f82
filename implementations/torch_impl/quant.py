"""A quantized paged KV cache in torch: float8_e4m3fn / float8_e5m2 (torch has them on CPU) or
int8 pages, with a scale per tensor or per KV head.

A write stores saturate(round(x / scale)): clamped to ±max before the cast (torch's cast of an
out-of-range value is not a saturation everywhere), rounded to nearest even by the cast
(torch.round for int8). A read multiplies the gathered codes by their head's scale.
"""

from __future__ import annotations

import torch

from attnspec.implementations.quant_base import MAX

STORAGE = {
    "float8_e4m3fn": torch.float8_e4m3fn,
    "float8_e5m2": torch.float8_e5m2,
    "int8": torch.int8,
}


def quantize(x: torch.Tensor, kv_dtype: str, scale: torch.Tensor) -> torch.Tensor:
    """x (T, Hkv, D) as codes saturate(round(x / scale)) with scale (Hkv,), in `kv_dtype`."""
    wide = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = (x.to(wide) / scale.to(wide)[:, None]).clamp_(-MAX[kv_dtype], MAX[kv_dtype])
    return (y.round_() if kv_dtype == "int8" else y).to(STORAGE[kv_dtype])


def as_bytes(pages: torch.Tensor) -> torch.Tensor:
    """The pages as a same-shaped tensor index_copy_ can write (it has no float8 kernel on CPU)."""
    return pages.view(torch.uint8) if pages.element_size() == 1 else pages


def dequantize_(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Gathered codes already converted to the working dtype, (..., Hkv, D), times scale (Hkv,),
    in place."""
    return x.mul_(scale.to(x.dtype)[:, None])
