"""Causal linear attention in numpy: parallel, recurrent and chunked forms.

Definition (Katharopoulos et al., "Transformers are RNNs", ICML 2020):
    S_i = sum_{j<=i} phi(k_j) v_j^T,   z_i = sum_{j<=i} phi(k_j),
    y_i = phi(q_i)^T S_i / (phi(q_i)^T z_i + eps).
The chunked form is the intra-chunk masked product plus the inter-chunk state
(as in flash-linear-attention's chunk kernels). Shapes: q, k (B, H, T, Dk),
v (B, H, T, Dv); state = (S (B, H, Dk, Dv), z (B, H, Dk)). Computation runs in the
input dtype (float32 for float16 inputs); outputs have the input dtype and the state
has the computation dtype.
"""

from __future__ import annotations

import numpy as np

from attnspec.implementations.validate import check_linear_args, check_positive

LinearState = tuple[np.ndarray, np.ndarray]


def _compute_dtype(x: np.ndarray) -> np.dtype:
    return np.result_type(x.dtype, np.float32)


def _phi(x: np.ndarray, feature_map: str) -> np.ndarray:
    if feature_map == "relu":
        return np.maximum(x, 0)  # (..., Dk)
    return np.where(x > 0, x + 1, np.exp(np.minimum(x, 0)))  # (..., Dk)


def _initial_state(q: np.ndarray, v: np.ndarray, state: LinearState | None) -> LinearState:
    b, h, _, dk = q.shape
    dt = _compute_dtype(q)
    if state is None:
        return np.zeros((b, h, dk, v.shape[-1]), dt), np.zeros((b, h, dk), dt)
    return np.array(state[0], dtype=dt), np.array(state[1], dtype=dt)


def linear_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool = True,
    feature_map: str = "relu",
    eps: float = 1e-6,
) -> np.ndarray:
    """Parallel form: A = phi(Q) phi(K)^T masked lower-triangular, y = A V / (A 1 + eps)."""
    check_linear_args(q, k, v, feature_map, None)
    dt = _compute_dtype(q)
    fq = _phi(q.astype(dt), feature_map)  # (B, H, T, Dk)
    fk = _phi(k.astype(dt), feature_map)  # (B, H, T, Dk)
    a = fq @ np.swapaxes(fk, -1, -2)  # (B, H, T, T)
    if causal:
        a = np.tril(a)  # (B, H, T, T)
    o = (a @ v.astype(dt)) / (a.sum(axis=-1, keepdims=True) + eps)  # (B, H, T, Dv)
    return o.astype(q.dtype)


def linear_attention_recurrent(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    feature_map: str = "relu",
    eps: float = 1e-6,
    state: LinearState | None = None,
) -> tuple[np.ndarray, LinearState]:
    """Recurrent form: update (S, z) one token at a time; T = 1 is one decode step."""
    check_linear_args(q, k, v, feature_map, state)
    s, z = _initial_state(q, v, state)
    dt = s.dtype
    fq = _phi(q.astype(dt), feature_map)  # (B, H, T, Dk)
    fk = _phi(k.astype(dt), feature_map)  # (B, H, T, Dk)
    vv = v.astype(dt)  # (B, H, T, Dv)
    o = np.empty(vv.shape, dt)  # (B, H, T, Dv)
    for i in range(q.shape[2]):
        s = s + fk[:, :, i, :, None] * vv[:, :, i, None, :]  # (B, H, Dk, Dv)
        z = z + fk[:, :, i]  # (B, H, Dk)
        num = np.einsum("bhk,bhkv->bhv", fq[:, :, i], s)  # (B, H, Dv)
        den = np.einsum("bhk,bhk->bh", fq[:, :, i], z) + eps  # (B, H)
        o[:, :, i] = num / den[..., None]
    return o.astype(q.dtype), (s, z)


def linear_attention_chunked(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    chunk_size: int,
    feature_map: str = "relu",
    eps: float = 1e-6,
    state: LinearState | None = None,
) -> tuple[np.ndarray, LinearState]:
    """Chunked form: per chunk, masked intra-chunk product plus the carried (S, z).

    chunk_size need not divide T; the last chunk is shorter.
    """
    check_positive(chunk_size=chunk_size)
    check_linear_args(q, k, v, feature_map, state)
    s, z = _initial_state(q, v, state)
    dt = s.dtype
    fq = _phi(q.astype(dt), feature_map)  # (B, H, T, Dk)
    fk = _phi(k.astype(dt), feature_map)  # (B, H, T, Dk)
    vv = v.astype(dt)  # (B, H, T, Dv)
    o = np.empty(vv.shape, dt)  # (B, H, T, Dv)
    for start in range(0, q.shape[2], chunk_size):
        sl = slice(start, start + chunk_size)
        qc, kc, vc = fq[:, :, sl], fk[:, :, sl], vv[:, :, sl]  # (B, H, C, D*)
        a = np.tril(qc @ np.swapaxes(kc, -1, -2))  # (B, H, C, C)
        num = qc @ s + a @ vc  # (B, H, C, Dv)
        den = qc @ z[..., None] + a.sum(axis=-1, keepdims=True) + eps  # (B, H, C, 1)
        o[:, :, sl] = num / den
        s = s + np.swapaxes(kc, -1, -2) @ vc  # (B, H, Dk, Dv)
        z = z + kc.sum(axis=2)  # (B, H, Dk)
    return o.astype(q.dtype), (s, z)
