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


def check_causal_lengths(Tq: int, Tk: int, *, causal: bool) -> None:
    """Causal attention (bottom-right aligned) needs at least as many keys as queries."""
    if causal and Tk < Tq:
        raise ValueError(f"causal attention needs Tk >= Tq, got Tq={Tq}, Tk={Tk}")


def check_positive(**sizes: int) -> None:
    """Raise ValueError naming the first size that is not a positive int."""
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


FEATURE_MAPS: tuple[str, ...] = ("relu", "elu1")  # phi for linear attention: ReLU, elu + 1


def check_linear_args(q: Any, k: Any, v: Any, feature_map: str, state: Any) -> None:
    """Validate linear-attention q, k (B, H, T, Dk), v (B, H, T, Dv) and a state (S, z)."""
    if feature_map not in FEATURE_MAPS:
        raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            raise ValueError(f"{name} must be 4-D (B, H, T, D), got shape {tuple(x.shape)}")
    if tuple(q.shape) != tuple(k.shape):
        raise ValueError(
            f"q and k must have the same shape (B, H, T, Dk), "
            f"got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if tuple(v.shape[:3]) != tuple(q.shape[:3]):
        raise ValueError(
            f"v must be (B, H, T, Dv) matching q's (B, H, T) {tuple(q.shape[:3])}, "
            f"got {tuple(v.shape)}"
        )
    if state is not None:
        b, h, _, dk = (int(d) for d in q.shape)
        dv = int(v.shape[-1])
        s, z = state
        if tuple(s.shape) != (b, h, dk, dv) or tuple(z.shape) != (b, h, dk):
            raise ValueError(
                f"state must be (S {(b, h, dk, dv)}, z {(b, h, dk)}), "
                f"got S {tuple(s.shape)}, z {tuple(z.shape)}"
            )
