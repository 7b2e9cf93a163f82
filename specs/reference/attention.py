"""Float64 reference softmax attention, and the same plain computation in a working dtype.

The working-dtype variant is the "plain same-precision computation" whose error sets the
budget (FlashAttention's test rule): float32 and float16 run in numpy in that dtype; bfloat16,
which numpy lacks, runs in float32 and rounds each stored intermediate to bfloat16.
"""

from __future__ import annotations

import numpy as np

from attnspec.specs.dtypes import WORK, matmul, stored


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


WINDOW_KINDS = ("left", "symmetric")  # the non-causal window conventions (attnspec.specs.limits)


def visible_mask(
    Tq: int, Tk: int, *, causal: bool, window: int | None = None, window_kind: str = "left"
) -> np.ndarray:
    """(Tq, Tk) keys each query sees: bottom-right causal, and the window. A left window (ours,
    flash-attn's (w - 1, 0)) lets the query at absolute position p see keys j > p - w; a
    symmetric one (vLLM's sliding_window, FlexAttention's |q - kv| < w) also needs j < p + w.
    Under the causal mask both are (p - w, p]."""
    if window_kind not in WINDOW_KINDS:
        raise ValueError(f"window_kind {window_kind!r}; choose from {WINDOW_KINDS}")
    visible = causal_mask(Tq, Tk) if causal else np.ones((Tq, Tk), bool)  # (Tq, Tk)
    if window is not None:
        p = np.arange(Tq)[:, None] + (Tk - Tq)  # (Tq, 1) absolute query positions
        j = np.arange(Tk)[None, :]  # (1, Tk)
        visible &= j > p - window  # (Tq, Tk)
        if window_kind == "symmetric":
            visible &= j < p + window  # (Tq, Tk)
    return visible


def scores(
    q: np.ndarray,
    k: np.ndarray,
    *,
    causal: bool,
    scale: float | None = None,
    precision: str = "float64",
    window: int | None = None,
    softcap: float | None = None,
    window_kind: str = "left",
) -> np.ndarray:
    """Scaled, capped and masked logits per kv head group (B, Hkv, G, Tq, Tk); -inf where
    masked. In a working `precision`, every stored value is rounded."""
    work = WORK[precision]
    rnd = stored(precision)
    Tq, D = q.shape[2], q.shape[3]
    Tk = k.shape[2]
    scale = 1.0 / np.sqrt(D) if scale is None else scale
    qq = grouped(np.asarray(q, work), k.shape[1])  # (B, Hkv, G, Tq, D)
    kk: np.ndarray = np.asarray(k, work)[:, :, None]  # (B, Hkv, 1, Tk, D)
    # A float16 baseline may overflow (a NaN baseline error leaves the budget to its floor).
    with np.errstate(over="ignore", invalid="ignore"):
        s = rnd(rnd(matmul(qq, kk.swapaxes(-1, -2))) * work(scale))  # (B, Hkv, G, Tq, Tk)
        if softcap is not None:
            s = rnd(work(softcap) * np.tanh(s / work(softcap)))
    if causal or window is not None:
        visible = visible_mask(Tq, Tk, causal=causal, window=window, window_kind=window_kind)
        s = np.where(visible, s, -np.inf)
    return s


def weights(
    q: np.ndarray,
    k: np.ndarray,
    *,
    causal: bool,
    scale: float | None = None,
    precision: str = "float64",
    window: int | None = None,
    softcap: float | None = None,
    window_kind: str = "left",
) -> np.ndarray:
    """softmax of `scores` per kv head group (B, Hkv, G, Tq, Tk); rows that see no key are 0.
    Max-subtracted; in a working `precision`, every stored value rounded."""
    s = scores(
        q,
        k,
        causal=causal,
        scale=scale,
        precision=precision,
        window=window,
        softcap=softcap,
        window_kind=window_kind,
    )
    return softmax(s, precision)


def softmax(s: np.ndarray, precision: str = "float64") -> np.ndarray:
    """softmax of `scores` s (B, Hkv, G, Tq, Tk) over the keys; rows that see no key are 0."""
    work = WORK[precision]
    rnd = stored(precision)
    with np.errstate(over="ignore", invalid="ignore"):
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
        o = stored(precision)(matmul(p, vv))  # (B, Hkv, G, Tq, Dv)
    return o.reshape(B, Hkv * G, Tq, v.shape[-1]).astype(np.float64)


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
    window_kind: str = "left",
) -> np.ndarray:
    """softmax(q k^T * scale [+ causal mask]) v, with max-subtraction; rows seeing no key give 0.

    Source: Vaswani et al. 2017, eq. 1; GQA head mapping as in Ainslie et al. 2023. Options
    (attnspec.specs.reference.serving): `softcap` c caps the scaled logits to c*tanh(s/c) before the
    mask (Gemma 2); `window` w lets the query at absolute position p see keys in (p-w, p]
    (causal), after p - w (non-causal, `window_kind` "left") or within w of p ("symmetric").
    """
    p = weights(
        q,
        k,
        causal=causal,
        scale=scale,
        precision=precision,
        window=window,
        softcap=softcap,
        window_kind=window_kind,
    )
    return weighted(p, v, precision)  # (B, Hq, Tq, Dv)


def attention_and_magnitude(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, *, causal: bool, scale: float | None = None
) -> tuple[np.ndarray, float]:
    """The float64 output and magnitude() from one computation of the weights."""
    p = weights(q, k, causal=causal, scale=scale)
    return weighted(p, v), float(np.linalg.norm(weighted(p, np.abs(v))))


def magnitude(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool,
    scale: float | None = None,
    window: int | None = None,
    softcap: float | None = None,
    window_kind: str = "left",
) -> float:
    """||P |V|||: the size of what each output is averaged from, whatever cancels in the sum."""
    p = weights(
        q, k, causal=causal, scale=scale, window=window, softcap=softcap, window_kind=window_kind
    )
    return float(np.linalg.norm(weighted(p, np.abs(v))))


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
    B, Hq, Tq, _ = q.shape
    s = scores(q, k, causal=causal, scale=scale, precision=precision)  # (B, Hkv, G, Tq, Tk)
    m = np.max(s, axis=-1)  # (B, Hkv, G, Tq)
    m_safe: np.ndarray = np.where(np.isfinite(m), m, 0).astype(work)  # (B, Hkv, G, Tq)
    with np.errstate(over="ignore", invalid="ignore"):
        total = rnd(np.exp(s - m_safe[..., None]).sum(axis=-1))  # (B, Hkv, G, Tq)
    with np.errstate(divide="ignore"):
        lse = rnd(m_safe + np.log(total))  # (B, Hkv, G, Tq)
    return lse.reshape(B, Hq, Tq).astype(np.float64)
