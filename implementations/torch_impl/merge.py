"""Merging two partial attention states by their log-sum-exp, in torch (vLLM's
merge_attn_states layout: outputs (T, H, Dv), natural-log lse (T, H)).

As attnspec.implementations.numpy_impl.merge: weights e^(lse_x - m) from m = max(lse_a, lse_b), an
empty side (lse -inf) weighs exactly 0 whatever its output slot holds, two empty sides give
(0, -inf). Computed in float32 (float64 for float64 outputs) on the outputs' device.
"""

from __future__ import annotations

import math

import torch

from attnspec.implementations.numpy_impl.merge import check_states


def merge_attention_states(
    o_a: torch.Tensor, lse_a: torch.Tensor, o_b: torch.Tensor, lse_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(o, lse) of the union of the two states' key sets: o (T, H, Dv) in o_a's dtype, lse (T, H)
    in float32 (float64 for float64 outputs)."""
    check_states(o_a, lse_a, o_b, lse_b)
    dt = torch.float64 if o_a.dtype == torch.float64 else torch.float32
    la, lb = lse_a.to(o_a.device, dt), lse_b.to(o_a.device, dt)  # (T, H)
    m = torch.maximum(la, lb)  # (T, H)
    m = m.masked_fill(m == -math.inf, 0.0)  # both empty: both weights e^-inf = 0
    wa, wb = (la - m).exp(), (lb - m).exp()  # (T, H), in [0, 1]
    total = wa + wb  # (T, H), 0 only when both sides are empty
    denom = total.masked_fill(total == 0, 1.0)
    # A side of weight 0 contributes exactly 0, even if its output slot holds NaN or Inf.
    ca = torch.where(wa[..., None] > 0, o_a.to(dt) * (wa / denom)[..., None], 0.0)
    cb = torch.where(wb[..., None] > 0, o_b.to(dt) * (wb / denom)[..., None], 0.0)
    lse = (m + total.log()).masked_fill(total == 0, -math.inf)  # (T, H)
    return (ca + cb).to(o_a.dtype), lse  # (T, H, Dv), (T, H)
