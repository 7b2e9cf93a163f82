"""The mask and logit options of torch's attention ops: causal, sliding window, softcap.

Query i of Tq (absolute position p = i + Tk - Tq, bottom-right aligned) sees key j iff
j <= p when causal, and j > p - window when a window is given; softcap c replaces the
scaled logits s by c*tanh(s/c) before the mask (Gemma 2), so masked keys stay at -inf.
Dense attention with an option runs the explicit grouped-matmul path here (SDPA has no
softcap, and a window needs an explicit mask anyway).
"""

from __future__ import annotations

import math

import torch

from attnspec.implementations.numpy_impl.masking import OPTIONS, check_options
from attnspec.implementations.validate import check_attention_shapes

__all__ = ["OPTIONS", "attention_lse", "attention_options", "cap", "visible"]


def cap(s: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """c*tanh(s/c) for the scaled logits s; s itself when there is no cap."""
    return s if softcap is None else torch.tanh(s / softcap) * softcap


def visible(
    qpos: torch.Tensor, kpos: torch.Tensor, *, causal: bool, window: int | None
) -> torch.Tensor | None:
    """Which keys (positions kpos (..., Tk)) each query (qpos (..., Tq)) sees: (..., Tq, Tk);
    None when every key is visible."""
    if not causal and window is None:
        return None
    q, k = qpos[..., :, None], kpos[..., None, :]
    seen = k <= q if causal else torch.ones_like(k > q)
    return seen & (k > q - window) if window is not None else seen


def attention_options(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    scale: float | None = None,
    window: int | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """Dense attention with a window and/or softcap: grouped matmuls with an explicit mask."""
    o, _ = attention_lse(q, k, v, causal=causal, scale=scale, window=window, softcap=softcap)
    return o


def attention_lse(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    scale: float | None = None,
    window: int | None = None,
    softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`attention_options` and the natural-log log-sum-exp of each query's scaled, capped,
    masked logits (B, Hq, Tq) in float32 (float64 for float64 inputs); a query that sees no key
    (causal Tq > Tk, no keys at all) gives 0 and -inf."""
    check_options(window, softcap)
    B, Hq, Tq, D, Hkv, Tk, Dv = check_attention_shapes(q, k, v, causal=causal)
    G = Hq // Hkv
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    if Tk == 0:
        o0 = torch.zeros((B, Hq, Tq, Dv), dtype=q.dtype, device=q.device)
        return o0, torch.full((B, Hq, Tq), -math.inf, dtype=dt, device=q.device)
    sc = 1.0 / math.sqrt(D) if scale is None else float(scale)
    qg = q.to(dt).reshape(B, Hkv, G * Tq, D)  # (B, Hkv, G*Tq, D)
    s = (qg @ k.to(dt).transpose(-1, -2)).mul_(sc).view(B, Hkv, G, Tq, Tk)  # (B, Hkv, G, Tq, Tk)
    s = cap(s, softcap)
    qpos = torch.arange(Tq, device=q.device) + (Tk - Tq)  # (Tq,)
    seen = visible(qpos, torch.arange(Tk, device=q.device), causal=causal, window=window)
    if seen is not None:
        s = s.masked_fill(~seen, -math.inf)  # (B, Hkv, G, Tq, Tk)
    m = s.amax(dim=-1, keepdim=True)  # (B, Hkv, G, Tq, 1)
    m = m.masked_fill(m == -math.inf, 0.0)
    p = (s - m).exp_()  # (B, Hkv, G, Tq, Tk)
    l = p.sum(dim=-1, keepdim=True)  # (B, Hkv, G, Tq, 1)
    o = p.view(B, Hkv, G * Tq, Tk) @ v.to(dt)  # (B, Hkv, G*Tq, Dv)
    o = o.view(B, Hkv, G, Tq, Dv) / l.masked_fill(l == 0, 1.0)  # rows seeing no key stay 0
    lse = (m + l.log()).reshape(B, Hq, Tq)  # (B, Hq, Tq): log 0 = -inf where no key is seen
    return o.reshape(B, Hq, Tq, Dv).to(q.dtype), lse
