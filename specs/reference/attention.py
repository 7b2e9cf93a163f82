"""Float64 reference softmax attention, and the same plain computation in a working dtype.

The working-dtype variant is the "plain same-precision computation" whose error sets the
budget (FlashAttention's test rule): float32 and float16 run in numpy in that dtype; bfloat16,
which numpy lacks, runs in float32 and rounds each stored intermediate to bfloat16.
"""

from __future__ import annotations

import numpy as np

from specs.dtypes import WORK, stored


def causal_mask(Tq: int, Tk: int) -> np.ndarray:
    """Bottom-right aligned mask (Tq, Tk): query i sees key j iff j <= i + (Tk - Tq)."""
    i = np.arange(Tq)[:, None]  # (Tq, 1)
    j = np.arange(Tk)[None, :]  # (1, Tk)
    return j <= i + (Tk - Tq)  # (Tq, Tk)


def expand_kv(x: np.ndarray, Hq: int) -> np.ndarray:
    """Repeat kv heads so query head h reads kv head h // (Hq // Hkv)."""
    Hkv = x.shape[1]
    return np.repeat(x, Hq // Hkv, axis=1)  # (B, Hq, Tk, D)


def logits(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Unscaled scores q k^T per query head (B, Hq, Tq, Tk), in float64."""
    return np.einsum("bhqd,bhkd->bhqk", q, expand_kv(np.asarray(k, np.float64), q.shape[1]))


@np.errstate(over="ignore", invalid="ignore")  # a half-precision baseline may overflow: by design
def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool,
    scale: float | None = None,
    precision: str = "float64",
    window: int | None = None,
    softcap: float | None = None,
) -> np.ndarray:
    """softmax(q k^T * scale [+ causal mask]) v, with max-subtraction; rows seeing no key give 0.

    Source: Vaswani et al. 2017, eq. 1; GQA head mapping as in Ainslie et al. 2023. Options
    (specs.reference.serving): `softcap` c caps the scaled logits to c*tanh(s/c) before the
    mask (Gemma 2); `window` w lets the query at absolute position p see keys in (p-w, p].
    """
    work = WORK[precision]

    rnd = stored(precision)

    _, Hq, Tq, D = q.shape
    Tk = k.shape[2]
    scale = 1.0 / np.sqrt(D) if scale is None else scale
    qq: np.ndarray = np.asarray(q, work)  # (B, Hq, Tq, D)
    kk = expand_kv(np.asarray(k, work), Hq)  # (B, Hq, Tk, D)
    vv = expand_kv(np.asarray(v, work), Hq)  # (B, Hq, Tk, Dv)
    s = rnd(rnd(qq @ kk.swapaxes(-1, -2)) * work(scale))  # (B, Hq, Tq, Tk)
    if softcap is not None:
        s = rnd(work(softcap) * np.tanh(s / work(softcap)))
    visible = visible_mask(Tq, Tk, causal=causal, window=window)  # (Tq, Tk)
    s = np.where(visible, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)  # (B, Hq, Tq, 1)
    m = np.where(np.isfinite(m), m, 0).astype(work)
    p = rnd(np.exp(s - m))  # (B, Hq, Tq, Tk)
    denom = rnd(p.sum(axis=-1, keepdims=True))  # (B, Hq, Tq, 1)
    p = rnd(p / np.where(denom > 0, denom, 1).astype(work))
    return rnd(p @ vv).astype(np.float64)  # (B, Hq, Tq, Dv)


def magnitude(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool,
    scale: float | None = None,
    window: int | None = None,
    softcap: float | None = None,
) -> float:
    """||P |V|||: the size of what each output is averaged from, whatever cancels in the sum."""
    out = attention(q, k, np.abs(v), causal=causal, scale=scale, window=window, softcap=softcap)
    return float(np.linalg.norm(out))


def visible_mask(Tq: int, Tk: int, *, causal: bool, window: int | None = None) -> np.ndarray:
    """(Tq, Tk) keys each query sees: bottom-right causal, and the left window (p - w, ...]."""
    visible = causal_mask(Tq, Tk) if causal else np.ones((Tq, Tk), bool)  # (Tq, Tk)
    if window is not None:
        p = np.arange(Tq)[:, None] + (Tk - Tq)  # (Tq, 1) absolute query positions
        visible &= np.arange(Tk)[None, :] > p - window  # (Tq, Tk)
    return visible


def log_sum_exp(
    q: np.ndarray,
    k: np.ndarray,
    *,
    causal: bool,
    scale: float | None = None,
    precision: str = "float64",
) -> np.ndarray:
    """log sum_j exp(scale q k_j^T) over the visible keys (B, Hq, Tq); -inf where none is visible.

    In a working `precision` this is the plain max-subtracted computation (the baseline).
    """
    work = WORK[precision]

    rnd = stored(precision)

    _, Hq, Tq, D = q.shape
    Tk = k.shape[2]
    scale = 1.0 / np.sqrt(D) if scale is None else scale
    kk = expand_kv(np.asarray(k, work), Hq)  # (B, Hq, Tk, D)
    s = rnd(rnd(np.asarray(q, work) @ kk.swapaxes(-1, -2)) * work(scale))  # (B, Hq, Tq, Tk)
    visible = causal_mask(Tq, Tk) if causal else np.ones((Tq, Tk), bool)  # (Tq, Tk)
    s = np.where(visible, s, -np.inf)
    m = np.max(s, axis=-1)  # (B, Hq, Tq)
    m_safe: np.ndarray = np.where(np.isfinite(m), m, 0).astype(work)  # (B, Hq, Tq)
    total = rnd(np.exp(s - m_safe[..., None]).sum(axis=-1))  # (B, Hq, Tq)
    with np.errstate(divide="ignore"):
        lse = rnd(m_safe + np.log(total))  # (B, Hq, Tq)
    return lse.astype(np.float64)
