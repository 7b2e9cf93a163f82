"""Causal linear attention in torch: parallel, recurrent and chunked forms.

Definition (Katharopoulos et al., "Transformers are RNNs", ICML 2020):
    S_i = sum_{j<=i} phi(k_j) v_j^T,   z_i = sum_{j<=i} phi(k_j),
    y_i = phi(q_i)^T S_i / (phi(q_i)^T z_i + eps).
The chunked form (as in flash-linear-attention) runs every chunk at once: a masked
intra-chunk product plus the state entering each chunk, an exclusive prefix sum over
the chunks' phi(K)^T V. Shapes: q, k (B, H, T, Dk), v (B, H, T, Dv);
state = (S (B, H, Dk, Dv), z (B, H, Dk)). Half-precision inputs are computed in
float32; outputs have the input dtype and the state has the computation dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attnspec.implementations.validate import check_linear_args, check_positive

LinearState = tuple[torch.Tensor, torch.Tensor]


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _phi(x: torch.Tensor, feature_map: str) -> torch.Tensor:
    if feature_map == "relu":
        return torch.relu(x)  # (..., Dk)
    return F.elu(x) + 1  # (..., Dk)


def _initial_state(q: torch.Tensor, v: torch.Tensor, state: LinearState | None) -> LinearState:
    b, h, _, dk = q.shape
    dt = _compute_dtype(q)
    if state is None:
        s = torch.zeros(b, h, dk, v.shape[-1], dtype=dt, device=q.device)  # (B, H, Dk, Dv)
        z = torch.zeros(b, h, dk, dtype=dt, device=q.device)  # (B, H, Dk)
        return s, z
    return state[0].to(q.device, dt), state[1].to(q.device, dt)


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    feature_map: str = "relu",
    eps: float = 1e-6,
) -> torch.Tensor:
    """Parallel form: A = phi(Q) phi(K)^T masked lower-triangular, y = A V / (A 1 + eps)."""
    check_linear_args(q, k, v, feature_map, None)
    dt = _compute_dtype(q)
    fq = _phi(q.to(dt), feature_map)  # (B, H, T, Dk)
    fk = _phi(k.to(dt), feature_map)  # (B, H, T, Dk)
    a = fq @ fk.transpose(-1, -2)  # (B, H, T, T)
    if causal:
        a = torch.tril(a)  # (B, H, T, T)
    o = (a @ v.to(dt)) / (a.sum(dim=-1, keepdim=True) + eps)  # (B, H, T, Dv)
    return o.to(q.dtype)


def linear_attention_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    feature_map: str = "relu",
    eps: float = 1e-6,
    state: LinearState | None = None,
) -> tuple[torch.Tensor, LinearState]:
    """Recurrent form: update (S, z) one token at a time over all (B, H); T = 1 is one decode step."""
    check_linear_args(q, k, v, feature_map, state)
    s, z = _initial_state(q, v, state)
    dt = s.dtype
    fq = _phi(q.to(dt), feature_map)  # (B, H, T, Dk)
    fk = _phi(k.to(dt), feature_map)  # (B, H, T, Dk)
    vv = v.to(dt)  # (B, H, T, Dv)
    o = torch.empty_like(vv)  # (B, H, T, Dv)
    for i in range(q.shape[2]):
        s = s + fk[:, :, i, :, None] * vv[:, :, i, None, :]  # (B, H, Dk, Dv)
        z = z + fk[:, :, i]  # (B, H, Dk)
        num = (fq[:, :, i, None, :] @ s).squeeze(-2)  # (B, H, Dv)
        den = (fq[:, :, i] * z).sum(dim=-1, keepdim=True) + eps  # (B, H, 1)
        o[:, :, i] = num / den
    return o.to(q.dtype), (s, z)


def linear_attention_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    chunk_size: int,
    feature_map: str = "relu",
    eps: float = 1e-6,
    state: LinearState | None = None,
) -> tuple[torch.Tensor, LinearState]:
    """Chunked form, all chunks in one batch of matmuls; chunk_size need not divide T."""
    check_positive(chunk_size=chunk_size)
    check_linear_args(q, k, v, feature_map, state)
    s0, z0 = _initial_state(q, v, state)
    dt = s0.dtype
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    c = chunk_size
    n = -(-t // c)
    if n == 0:
        return v.new_zeros(b, h, 0, dv), (s0.clone(), z0.clone())
    fq = _phi(q.to(dt), feature_map)  # (B, H, T, Dk)
    fk = _phi(k.to(dt), feature_map)  # (B, H, T, Dk)
    vv = v.to(dt)  # (B, H, T, Dv)
    if n * c != t:
        # Padding goes after phi so padded keys contribute exactly zero for every feature map.
        pad = (0, 0, 0, n * c - t)
        fq, fk, vv = F.pad(fq, pad), F.pad(fk, pad), F.pad(vv, pad)  # (B, H, N*C, *)
    fq = fq.reshape(b, h, n, c, dk)  # (B, H, N, C, Dk)
    fk = fk.reshape(b, h, n, c, dk)  # (B, H, N, C, Dk)
    vv = vv.reshape(b, h, n, c, dv)  # (B, H, N, C, Dv)
    kv = fk.transpose(-1, -2) @ vv  # (B, H, N, Dk, Dv)
    ksum = fk.sum(dim=3)  # (B, H, N, Dk)
    # State entering each chunk: initial state plus the sum over earlier chunks (exclusive scan;
    # subtracting kv from an inclusive scan would cancel catastrophically when a chunk is large).
    s_in = torch.cat([s0[:, :, None], kv[:, :, :-1]], dim=2)  # (B, H, N, Dk, Dv)
    z_in = torch.cat([z0[:, :, None], ksum[:, :, :-1]], dim=2).cumsum_(dim=2)  # (B, H, N, Dk)
    if s_in.device.type == "cpu":
        # torch's CPU cumsum over a middle dim is several times slower than a loop over chunks.
        for i in range(1, n):
            s_in[:, :, i].add_(s_in[:, :, i - 1])
    else:
        s_in.cumsum_(dim=2)
    a = (fq @ fk.transpose(-1, -2)).tril_()  # (B, H, N, C, C)
    num = torch.matmul(fq, s_in).add_(a @ vv)  # (B, H, N, C, Dv)
    den = (
        (fq * z_in[:, :, :, None])
        .sum(dim=-1, keepdim=True)
        .add_(a.sum(dim=-1, keepdim=True))
        .add_(eps)
    )  # (B, H, N, C, 1)
    o = num.div_(den).reshape(b, h, n * c, dv)[:, :, :t]  # (B, H, T, Dv)
    s = s_in[:, :, -1] + kv[:, :, -1]  # (B, H, Dk, Dv)
    z = z_in[:, :, -1] + ksum[:, :, -1]  # (B, H, Dk)
    return o.to(q.dtype), (s, z)
