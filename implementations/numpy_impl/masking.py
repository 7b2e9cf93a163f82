"""The mask and logit options shared by numpy's attention ops: causal, window, softcap.

Query i of Tq (absolute position p = i + Tk - Tq, bottom-right aligned) sees key j iff
j <= p when causal, and j > p - window when a window is given; softcap c replaces the
scaled logits s by c*tanh(s/c) before the mask (Gemma 2), so masked keys stay at -inf.
"""

from __future__ import annotations

import numpy as np

# "lse": return_lse=True on every attention op; "empty_rows": a query that sees no key (causal
# Tq > Tk, a sequence without keys) gives output 0 and log-sum-exp -inf (attnspec.specs.merge).
# "kv_quant": paged_kv_cache(..., kv_dtype, k_scale, v_scale), an 8-bit cache (attnspec.specs.quant).
OPTIONS = frozenset({"window", "softcap", "lse", "empty_rows", "kv_quant"})


def check_options(window: int | None, softcap: float | None) -> None:
    """A window is a positive int and a softcap a positive number; None turns either off."""
    if window is not None and (
        isinstance(window, bool) or not isinstance(window, int) or window < 1
    ):
        raise ValueError(f"window must be a positive int or None, got {window!r}")
    if softcap is not None and not (isinstance(softcap, int | float) and softcap > 0):
        raise ValueError(f"softcap must be a positive number or None, got {softcap!r}")


def visible(
    qpos: np.ndarray, kpos: np.ndarray, *, causal: bool, window: int | None
) -> np.ndarray | None:
    """(..., Tq, Tk) which keys at positions kpos each query at positions qpos sees; None: all."""
    if not causal and window is None:
        return None
    seen = np.ones(np.broadcast_shapes(qpos[..., :, None].shape, kpos[..., None, :].shape), bool)
    if causal:
        seen &= kpos[..., None, :] <= qpos[..., :, None]
    if window is not None:
        seen &= kpos[..., None, :] > qpos[..., :, None] - window
    return seen


def restrict(
    s: np.ndarray,
    qpos: np.ndarray,
    kpos: np.ndarray,
    *,
    causal: bool,
    window: int | None = None,
    softcap: float | None = None,
) -> np.ndarray:
    """Scaled logits s (..., Tq, Tk) capped, then -inf wherever a query may not see a key."""
    check_options(window, softcap)
    if softcap is not None:
        s = softcap * np.tanh(s / s.dtype.type(softcap))
    seen = visible(qpos, kpos, causal=causal, window=window)
    return s if seen is None else np.where(seen, s, -np.inf)
