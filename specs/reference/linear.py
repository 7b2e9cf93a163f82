"""Float64 reference for causal linear attention (the prefix-accumulator definition), and the
plain parallel computation in a working dtype whose error sets the tolerance budget.

Katharopoulos et al., "Transformers are RNNs" (ICML 2020), eqs. 4-9:
    S_i = sum_{j<=i} phi(k_j) v_j^T,   z_i = sum_{j<=i} phi(k_j),
    y_i = phi(q_i)^T S_i / (phi(q_i)^T z_i + eps).
The reference walks the positions in blocks of BLOCK: inside a block the prefix sums are a
lower-triangular product, across blocks the state (S, z) is carried, in float64 throughout,
so sequences of thousands of tokens stay cheap. Shapes: q, k (B, H, T, Dk), v (B, H, T, Dv).
"""

from __future__ import annotations

import numpy as np

from attnspec.specs.dtypes import WORK, matmul, stored

FEATURE_MAPS: tuple[str, ...] = ("relu", "elu1")
BLOCK = 64  # positions per block of the reference's prefix sums

LinearState = tuple[np.ndarray, np.ndarray]


def feature_map_ref(x: np.ndarray, name: str) -> np.ndarray:
    """phi(x) in float64: "relu" is max(x, 0); "elu1" is elu(x) + 1 (Katharopoulos et al.)."""
    x = np.asarray(x, dtype=np.float64)  # (..., Dk)
    if name == "relu":
        return np.maximum(x, 0.0)  # (..., Dk)
    if name == "elu1":
        return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))  # (..., Dk)
    raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {name!r}")


def linear_state_ref(
    k: np.ndarray, v: np.ndarray, *, feature_map: str = "relu", state: LinearState | None = None
) -> LinearState:
    """Final state (S, z) after all T positions: S (B, H, Dk, Dv), z (B, H, Dk)."""
    fk = feature_map_ref(k, feature_map)  # (B, H, T, Dk)
    v = np.asarray(v, dtype=np.float64)  # (B, H, T, Dv)
    s = np.einsum("bhtk,bhtv->bhkv", fk, v)  # (B, H, Dk, Dv)
    z = fk.sum(axis=2)  # (B, H, Dk)
    if state is not None:
        s = s + np.asarray(state[0], dtype=np.float64)  # (B, H, Dk, Dv)
        z = z + np.asarray(state[1], dtype=np.float64)  # (B, H, Dk)
    return s, z


def linear_attention_ref(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool = True,
    feature_map: str = "relu",
    eps: float = 1e-6,
    state: LinearState | None = None,
) -> np.ndarray:
    """Prefix-accumulator output y (B, H, T, Dv) in float64.

    `state` is an initial (S, z) added to every prefix sum (the carried state of a
    preceding segment). Non-causal: every position uses the sums over all T positions.
    """
    fq = feature_map_ref(q, feature_map)  # (B, H, T, Dk)
    fk = feature_map_ref(k, feature_map)  # (B, H, T, Dk)
    v = np.asarray(v, dtype=np.float64)  # (B, H, T, Dv)
    b, h, t, dk = fq.shape
    dv = v.shape[-1]
    s = np.zeros((b, h, dk, dv))  # (B, H, Dk, Dv)
    z = np.zeros((b, h, dk))  # (B, H, Dk)
    if state is not None:
        s = s + np.asarray(state[0], dtype=np.float64)  # (B, H, Dk, Dv)
        z = z + np.asarray(state[1], dtype=np.float64)  # (B, H, Dk)
    if not causal:
        s = s + np.einsum("bhtk,bhtv->bhkv", fk, v)  # (B, H, Dk, Dv)
        z = z + fk.sum(axis=2)  # (B, H, Dk)
        return np.einsum("bhtk,bhkv->bhtv", fq, s) / (fq @ z[..., None] + eps)  # (B, H, T, Dv)
    y = np.zeros((b, h, t, dv))  # (B, H, T, Dv)
    for start in range(0, t, BLOCK):
        sl = slice(start, start + BLOCK)
        qb, kb, vb = fq[:, :, sl], fk[:, :, sl], v[:, :, sl]  # (B, H, C, D*)
        a = np.tril(qb @ kb.swapaxes(-1, -2))  # (B, H, C, C): phi(q_i) . phi(k_j), j <= i
        num = qb @ s + a @ vb  # (B, H, C, Dv): the state before the block, plus the block's part
        den = qb @ z[..., None] + a.sum(axis=-1, keepdims=True) + eps  # (B, H, C, 1)
        y[:, :, sl] = num / den
        s = s + kb.swapaxes(-1, -2) @ vb  # (B, H, Dk, Dv)
        z = z + kb.sum(axis=2)  # (B, H, Dk)
    return y


@np.errstate(over="ignore", invalid="ignore")  # a half-precision baseline may overflow: by design
def linear_attention_plain(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool = True,
    feature_map: str = "relu",
    eps: float = 1e-6,
    precision: str = "float32",
    rows: int | None = None,
) -> np.ndarray:
    """The parallel form A = tril(phi(Q) phi(K)^T), y = A V / (A 1 + eps), run in `precision`.

    This is the "plain same-precision computation" of the tolerance rule; bfloat16, which
    numpy lacks, runs in float32 and rounds each stored intermediate to bfloat16. With `rows`,
    only the last `rows` positions (B, H, rows, Dv), whose sums are the longest: a long
    sequence's baseline error at a fraction of the T x T cost.
    """
    work = WORK[precision]

    rnd = stored(precision)

    t = q.shape[2]
    first = t - rows if rows is not None else 0
    fq = rnd(feature_map_ref(q[:, :, first:], feature_map).astype(work))  # (B, H, T - first, Dk)
    fk = rnd(feature_map_ref(k, feature_map).astype(work))  # (B, H, T, Dk)
    # A plain float16 computation may overflow; its error is then NaN and the budget's floor rules.
    with np.errstate(over="ignore", invalid="ignore"):
        a = rnd(matmul(fq, fk.swapaxes(-1, -2)))  # (B, H, T - first, T)
        if causal:
            a = np.tril(a, k=first)  # (B, H, T - first, T): position first + r sees j <= it
        num = rnd(matmul(a, np.asarray(v, work)))  # (B, H, T, Dv)
        den = rnd(a.sum(axis=-1, keepdims=True) + work(eps))  # (B, H, T, 1)
        return rnd(num / den).astype(np.float64)  # (B, H, T, Dv)
