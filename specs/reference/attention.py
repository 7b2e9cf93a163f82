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


def grouped(x: np.ndarray, Hkv: int) -> np.ndarray:
    """Query heads (B, Hq, T, D) as (B, Hkv, G, T, D): head h is group h // G of kv head h // G.

    Broadcasting against (B, Hkv, 1, Tk, D) reads each kv head once, without repeating it.
    """
    B, Hq, T, D = x.shape
    return x.reshape(B, Hkv, Hq // Hkv, T, D)


def logits(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Unscaled scores q k^T per query head (B, Hq, Tq, Tk), in float64."""
    B, Hq, Tq, _ = q.shape
    kk = np.asarray(k, np.float64)[:, :, None]  # (B, Hkv, 1, Tk, D)
    s = grouped(np.asarray(q, np.float64), k.shape[1]) @ kk.swapaxes(-1, -2)  # (B, Hkv, G, Tq, Tk)
    return s.reshape(B, Hq, Tq, k.shape[2])


def weights(
    q: np.ndarray,
    k: np.ndarray,
    *,
    causal: bool,
    scale: float | None = None,
    precision: str = "float64",
) -> np.ndarray:
    """softmax(q k^T * scale [+ causal mask]) per kv head group (B, Hkv, G, Tq, Tk); rows that
    see no key are 0. Max-subtracted; in a working `precision`, every stored value rounded."""
    work = WORK[precision]

    rnd = stored(precision)

    Tq, D = q.shape[2], q.shape[3]
    Tk = k.shape[2]
    scale = 1.0 / np.sqrt(D) if scale is None else scale
    qq = grouped(np.asarray(q, work), k.shape[1])  # (B, Hkv, G, Tq, D)
    kk: np.ndarray = np.asarray(k, work)[:, :, None]  # (B, Hkv, 1, Tk, D)
    # A float16 baseline may overflow (a NaN baseline error leaves the budget to its floor).
    with np.errstate(over="ignore", invalid="ignore"):
        s = rnd(rnd(qq @ kk.swapaxes(-1, -2)) * work(scale))  # (B, Hkv, G, Tq, Tk)
        if causal:
            s = np.where(causal_mask(Tq, Tk), s, -np.inf)
        m = np.max(s, axis=-1, keepdims=True)  # (B, Hkv, G, Tq, 1)
        m = np.where(np.isfinite(m), m, 0).astype(work)
        p = rnd(np.exp(s - m))  # (B, Hkv, G, Tq, Tk)
        denom = rnd(p.sum(axis=-1, keepdims=True))  # (B, Hkv, G, Tq, 1)
        return rnd(p / np.where(denom > 0, denom, 1).astype(work))


def weighted(p: np.ndarray, v: np.ndarray, precision: str = "float64") -> np.ndarray:
    """The weights p (B, Hkv, G, Tq, Tk) applied to values v (B, Hkv, Tk, Dv): (B, Hq, Tq, Dv)."""
    B, Hkv, G, Tq, _ = p.shape
    vv: np.ndarray = np.asarray(v, WORK[precision])[:, :, None]  # (B, Hkv, 1, Tk, Dv)
    with np.errstate(over="ignore", invalid="ignore"):  # as in weights: a float16 baseline
        o = stored(precision)(p @ vv)  # (B, Hkv, G, Tq, Dv)
    return o.reshape(B, Hkv * G, Tq, v.shape[-1]).astype(np.float64)


def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool,
    scale: float | None = None,
    precision: str = "float64",
) -> np.ndarray:
    """softmax(q k^T * scale [+ causal mask]) v, with max-subtraction; rows seeing no key give 0.

    Source: Vaswani et al. 2017, eq. 1; GQA head mapping as in Ainslie et al. 2023.
    """
    p = weights(q, k, causal=causal, scale=scale, precision=precision)
    return weighted(p, v, precision)  # (B, Hq, Tq, Dv)


def attention_and_magnitude(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, *, causal: bool, scale: float | None = None
) -> tuple[np.ndarray, float]:
    """The float64 output and magnitude() from one computation of the weights."""
    p = weights(q, k, causal=causal, scale=scale)
    return weighted(p, v), float(np.linalg.norm(weighted(p, np.abs(v))))


def magnitude(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, *, causal: bool, scale: float | None = None
) -> float:
    """||P |V|||: the size of what each output is averaged from, whatever cancels in the sum."""
    return attention_and_magnitude(q, k, v, causal=causal, scale=scale)[1]
