"""Softmax attention in torch: grouped matmuls for decode-sized queries, SDPA for prefill.

Decode (few query tokens over a long cache) is bandwidth-bound: the grouped path reads each kv
head once for all the query heads that share it, without materialising repeated K/V. Prefill
uses torch's fused scaled_dot_product_attention with an explicit bottom-right mask when
Tq != Tk (SDPA's `is_causal` is top-left aligned).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from attnspec.implementations.torch_impl.masking import attention_lse
from attnspec.implementations.validate import check_attention_shapes

GROUPED_MAX_TQ = 16  # up to this many query tokens the grouped-matmul path is used


def causal_mask(Tq: int, Tk: int, device: torch.device) -> torch.Tensor:
    """Bottom-right aligned boolean mask (Tq, Tk): query i sees key j iff j <= i + Tk - Tq."""
    i = torch.arange(Tq, device=device)[:, None]  # (Tq, 1)
    j = torch.arange(Tk, device=device)[None, :]  # (1, Tk)
    return j <= i + (Tk - Tq)  # (Tq, Tk)


def attention_grouped(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float | None = None
) -> torch.Tensor:
    """softmax(q k^T * scale) v as two batched matmuls per kv head group (the decomposed path)."""
    B, Hq, Tq, D, Hkv, Tk, Dv = check_attention_shapes(q, k, v, causal=causal)
    G = Hq // Hkv
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    # K @ q^T rather than q @ K^T: the long cache is the row-major left operand, which CPU BLAS
    # streams about twice as fast for a handful of query columns.
    if q.dtype in (torch.float16, torch.bfloat16):  # scale in float32: q * scale may overflow
        qg = q.reshape(B, Hkv, G * Tq, D)  # (B, Hkv, G*Tq, D)
        s = torch.matmul(k, qg.transpose(-1, -2)).float().mul_(scale)  # (B, Hkv, Tk, G*Tq)
    else:  # folding the scale into the few query rows is the cheapest place for it
        qg = (q * scale).reshape(B, Hkv, G * Tq, D)  # (B, Hkv, G*Tq, D)
        s = torch.matmul(k, qg.transpose(-1, -2))  # (B, Hkv, Tk, G*Tq)
    s = s.transpose(-1, -2)  # (B, Hkv, G*Tq, Tk) view
    if causal and Tq > 1:  # with Tq == 1 the one query sees every key
        visible = causal_mask(Tq, Tk, q.device).repeat(G, 1)  # (G*Tq, Tk)
        s = s.masked_fill(~visible, float("-inf"))
    s = s.to(torch.promote_types(s.dtype, torch.float32))  # softmax in at least float32
    p = torch.softmax(s, dim=-1)  # (B, Hkv, G*Tq, Tk), contiguous
    o = torch.matmul(p.to(v.dtype), v)  # (B, Hkv, G*Tq, Dv)
    return o.reshape(B, Hq, Tq, Dv)  # (B, Hq, Tq, Dv)


def attention_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float | None = None
) -> torch.Tensor:
    """torch's fused attention with GQA and a bottom-right causal mask."""
    _, Hq, Tq, _, Hkv, Tk, _ = check_attention_shapes(q, k, v, causal=causal)
    mask = causal_mask(Tq, Tk, q.device) if causal and Tq != Tk else None  # (Tq, Tk)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=causal and Tq == Tk, scale=scale, enable_gqa=Hq != Hkv
    )  # (B, Hq, Tq, Dv)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    scale: float | None = None,
    window: int | None = None,
    softcap: float | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention with bottom-right causal alignment and GQA; picks the faster path by Tq. With
    return_lse, also the log-sum-exp (B, Hq, Tq); a query that sees no key gives 0 (lse -inf)."""
    Tq, Tk = int(q.shape[2]), int(k.shape[2])
    empty = Tk == 0 or (causal and Tq > Tk)
    if window is not None or softcap is not None or return_lse or empty:
        o, lse = attention_lse(q, k, v, causal=causal, scale=scale, window=window, softcap=softcap)
        return (o, lse) if return_lse else o
    path = attention_grouped if q.shape[2] <= GROUPED_MAX_TQ else attention_sdpa
    return path(q, k, v, causal=causal, scale=scale)
