"""FlashAttention-style tiled attention in torch: online softmax over key blocks.

Dao et al., "FlashAttention" (NeurIPS 2022), Algorithm 1, vectorised over batch, heads
and query blocks: the loop runs over key blocks; each step updates the running max m,
running sum l and unnormalised accumulator acc of every query block that can see the
key block, rescaling l and acc by exp(m_old - m_new). Causal masks are bottom-right
aligned (query i sees key j iff j <= i + Tk - Tq); query blocks entirely before a key
block (the key block is in their future) are skipped. Rows that see no key (only when
Tk < Tq) output 0 and have lse = -inf. GQA: the G query heads of a kv head are laid out
as extra rows of one matmul, so K/V are never repeated. Half-precision inputs are
computed in float32.
"""

from __future__ import annotations

import math

import torch

from attnspec.implementations.numpy_impl.masking import check_options
from attnspec.implementations.torch_impl.masking import cap, visible
from attnspec.implementations.validate import check_attention_shapes, check_positive


def tiled_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    scale: float | None = None,
    block_q: int,
    block_k: int,
    return_lse: bool = False,
    window: int | None = None,
    softcap: float | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """softmax(scale q k^T + mask) v computed key block by key block; optionally lse (B, Hq, Tq)."""
    b, hq, tq, d, hkv, tk, dv = check_attention_shapes(q, k, v, causal=causal)
    check_positive(block_q=block_q, block_k=block_k)
    check_options(window, softcap)
    g = hq // hkv
    off = tk - tq
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    sc = 1.0 / math.sqrt(d) if scale is None else float(scale)
    # Rows ordered (Tq, G) so that any suffix of query rows is one contiguous matmul operand.
    qr = (
        (q.to(dt) * sc).reshape(b, hkv, g, tq, d).transpose(2, 3).contiguous()
    )  # (B, Hkv, Tq, G, D)
    kk = k.to(dt)  # (B, Hkv, Tk, D)
    vv = v.to(dt)  # (B, Hkv, Tk, Dv)
    m = torch.full((b, hkv, tq, g), -math.inf, dtype=dt, device=q.device)  # (B, Hkv, Tq, G)
    l = torch.zeros((b, hkv, tq, g), dtype=dt, device=q.device)  # (B, Hkv, Tq, G)
    acc = torch.zeros((b, hkv, tq, g, dv), dtype=dt, device=q.device)  # (B, Hkv, Tq, G, Dv)
    rows = torch.arange(tq, device=q.device)  # (Tq,)
    for k0 in range(0, tk, block_k):
        k1 = min(k0 + block_k, tk)
        q0 = 0
        if causal:
            first_row = max(0, k0 - off)
            if first_row >= tq:
                break
            q0 = (first_row // block_q) * block_q
        n = tq - q0
        s = qr[:, :, q0:].reshape(b, hkv, n * g, d) @ kk[:, :, k0:k1].transpose(
            -1, -2
        )  # (B, Hkv, n*G, bk)
        s = cap(s.view(b, hkv, n, g, k1 - k0), softcap)  # (B, Hkv, n, G, bk)
        if window is not None:  # the window's left edge (with causal, the right one is below)
            cols = torch.arange(k0, k1, device=q.device)  # (bk,)
            inside = visible(rows[q0:] + off, cols, causal=False, window=window)  # (n, bk)
            s.masked_fill_(~inside[:, None, :], -math.inf)  # type: ignore[index]
        if causal and k1 - 1 > q0 + off:
            cols = torch.arange(k0, k1, device=q.device)  # (bk,)
            hidden = cols[None, :] > rows[q0:, None] + off  # (n, bk)
            s.masked_fill_(hidden[:, None, :], -math.inf)
        m_old = m[:, :, q0:]  # (B, Hkv, n, G)
        m_new = torch.maximum(m_old, s.amax(dim=-1))  # (B, Hkv, n, G)
        m_safe = m_new.masked_fill(m_new == -math.inf, 0.0)  # (B, Hkv, n, G)
        p = s.sub_(m_safe[..., None]).exp_()  # (B, Hkv, n, G, bk)
        alpha = (m_old - m_safe).exp_()  # (B, Hkv, n, G)
        pv = p.view(b, hkv, n * g, k1 - k0) @ vv[:, :, k0:k1]  # (B, Hkv, n*G, Dv)
        l[:, :, q0:].mul_(alpha).add_(p.sum(dim=-1))
        acc[:, :, q0:].mul_(alpha[..., None]).add_(pv.view(b, hkv, n, g, dv))
        m[:, :, q0:] = m_new
    seen = l > 0  # (B, Hkv, Tq, G)
    l_safe = torch.where(seen, l, torch.ones_like(l))  # (B, Hkv, Tq, G)
    o = torch.where(
        seen[..., None], acc / l_safe[..., None], torch.zeros_like(acc)
    )  # (B, Hkv, Tq, G, Dv)
    o = o.transpose(2, 3).reshape(b, hq, tq, dv).to(q.dtype)  # (B, Hq, Tq, Dv)
    if not return_lse:
        return o
    lse = torch.where(seen, m + torch.log(l_safe), torch.full_like(m, -math.inf))  # (B, Hkv, Tq, G)
    return o, lse.transpose(2, 3).reshape(b, hq, tq)  # (B, Hq, Tq)
