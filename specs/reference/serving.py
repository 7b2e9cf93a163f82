"""Float64 references for the serving ops: each sequence of a packed batch is dense attention
over its own keys (attnspec.specs.reference.attention), with the same options."""

from __future__ import annotations

from typing import Any

import numpy as np

from attnspec.specs.reference import attention as ref


def dense(x: np.ndarray) -> np.ndarray:
    """Packed rows (T, H, D) of one sequence as a dense (1, H, T, D) batch."""
    return x.transpose(1, 0, 2)[None]  # (1, H, T, D)


def sequence_attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, *, precision: str = "float64", **opts: Any
) -> np.ndarray:
    """One sequence's packed q (Tq, Hq, D) over k, v (Tk, Hkv, D) -> (Tq, Hq, Dv); `opts` are
    causal, scale, window and softcap as for attnspec.specs.reference.attention.attention."""
    out = ref.attention(dense(q), dense(k), dense(v), precision=precision, **opts)
    return out[0].transpose(1, 0, 2)  # (Tq, Hq, Dv)


def sequence_magnitude(q: np.ndarray, k: np.ndarray, v: np.ndarray, **opts: Any) -> float:
    """||P|V||| of one packed sequence: the size its output rows are averaged from."""
    return ref.magnitude(dense(q), dense(k), dense(v), **opts)
