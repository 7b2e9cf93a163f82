"""Argument checks shared by the shipped implementations: clear errors for bad shapes."""

from __future__ import annotations

from typing import Any


def check_attention_shapes(
    q: Any, k: Any, v: Any, *, causal: bool
) -> tuple[int, int, int, int, int, int, int]:
    """Validate q (B, Hq, Tq, D), k (B, Hkv, Tk, D), v (B, Hkv, Tk, Dv); return the sizes."""
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            f"attention expects 4-d q, k, v (B, H, T, D); got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    B, Hq, Tq, D = (int(s) for s in q.shape)
    Bk, Hkv, Tk, Dk = (int(s) for s in k.shape)
    Bv, Hv, Tv, Dv = (int(s) for s in v.shape)
    if (Bk, Dk) != (B, D) or (Bv, Hv, Tv) != (Bk, Hkv, Tk):
        raise ValueError(
            f"attention shapes disagree: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if Hkv == 0 or Hq % Hkv:
        raise ValueError(f"query heads {Hq} must be a multiple of kv heads {Hkv}")
    return B, Hq, Tq, D, Hkv, Tk, Dv


def check_positive(**sizes: int) -> None:
    """Raise ValueError naming the first size that is not a positive int."""
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
