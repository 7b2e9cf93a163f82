"""Tiny Llama-style decoder in torch, any device, with a gpt-fast style static KV cache.

The function is attnspec.specs.reference.decoder's (RMSNorm, rotate-half RoPE, GQA attention,
SwiGLU, tied or untied LM head). As in gpt-fast's model.py, each layer's cache is
allocated once at max_len and written in place; q/k/v and gate/up projections are
fused into one matmul each; RMSNorm and RoPE run in float32 (float64 for float64
weights) and cast back. Matmuls and attention (scaled_dot_product_attention) run in
the weights' dtype. `decode` appends T >= 1 tokens at RoPE positions
len(cache) .. len(cache) + T - 1 with the bottom-right causal mask. On accelerators the
token-range check is skipped to avoid a host sync per step.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from attnspec.implementations.decoder_base import CachedDecoder
from attnspec.implementations.kv_base import DecoderCache
from attnspec.implementations.torch_impl.kv_cache import TorchKVCache
from attnspec.specs.decoder_weights import DecoderConfig, check_weights


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.to(torch.promote_types(x.dtype, torch.float32))  # (B, T, d)
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(
        x
    ) * weight  # (B, T, d)


class TorchDecoder(CachedDecoder):
    """The model: forward (full recompute), prefill and decode (cached)."""

    def __init__(self, config: DecoderConfig, weights: Mapping[str, torch.Tensor]) -> None:
        check_weights(config, weights)
        kinds = {(a.dtype, a.device) for a in weights.values()}
        if len(kinds) != 1 or not next(iter(kinds))[0].is_floating_point:
            raise ValueError(
                f"weights must share one floating dtype and device, got {sorted(map(str, kinds))}"
            )
        self.config = config
        self.dtype, self.device = next(iter(kinds))
        w = dict(weights)
        self.embed = w["embed"]  # (vocab, d)
        self.head = w["embed"].T if config.tied_embeddings else w["lm_head"]  # (d, vocab)
        self.final_norm = w["final_norm"]  # (d,)
        self.layer_weights = []
        for i in range(config.layers):
            p = f"layers.{i}."
            self.layer_weights.append(
                {
                    "attn_norm": w[p + "attn_norm"],  # (d,)
                    "wqkv": torch.cat(
                        [w[p + "wq"], w[p + "wk"], w[p + "wv"]], dim=1
                    ),  # (d, (Hq+2Hkv)*D)
                    "wo": w[p + "wo"],  # (Hq*D, d)
                    "mlp_norm": w[p + "mlp_norm"],  # (d,)
                    "w13": torch.cat([w[p + "w_gate"], w[p + "w_up"]], dim=1),  # (d, 2F)
                    "w_down": w[p + "w_down"],  # (F, d)
                }
            )
        hd = config.head_dim
        inv_freq = config.rope_base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)  # (D/2,)
        angles = (
            torch.arange(config.max_len, dtype=torch.float64)[:, None] * inv_freq[None, :]
        )  # (max_len, D/2)
        self.rope_dtype = torch.promote_types(self.dtype, torch.float32)
        self.cos = torch.cat([angles.cos()] * 2, dim=-1).to(
            self.device, self.rope_dtype
        )  # (max_len, D)
        self.sin = torch.cat([angles.sin()] * 2, dim=-1).to(
            self.device, self.rope_dtype
        )  # (max_len, D)

    def new_cache(self, batch: int) -> DecoderCache:
        c = self.config
        layers = [
            TorchKVCache(batch, c.n_kv_heads, c.head_dim, c.max_len, self.dtype, self.device)
            for _ in range(c.layers)
        ]
        return DecoderCache(layers, batch)

    def _check_tokens(self, tokens: torch.Tensor, start: int) -> None:
        if (
            not isinstance(tokens, torch.Tensor)
            or tokens.ndim != 2
            or tokens.dtype not in (torch.int64, torch.int32)
        ):
            raise ValueError(
                "tokens must be a 2-D int64 torch.Tensor (B, T), got "
                f"{type(tokens).__name__} {getattr(tokens, 'dtype', '')} {getattr(tokens, 'shape', '')}"
            )
        b, t = tokens.shape
        if b < 1 or t < 1:
            raise ValueError(f"tokens must have B >= 1 and T >= 1, got shape {tuple(tokens.shape)}")
        if start + t > self.config.max_len:
            raise ValueError(
                f"too many tokens: {start} cached + {t} new exceed max_len {self.config.max_len}"
            )
        if tokens.device.type == "cpu" and (tokens.min() < 0 or tokens.max() >= self.config.vocab):
            raise ValueError(
                f"tokens must lie in [0, {self.config.vocab}), "
                f"got [{int(tokens.min())}, {int(tokens.max())}]"
            )

    def _rope(self, x: torch.Tensor, start: int) -> torch.Tensor:
        t, half = x.shape[2], x.shape[3] // 2
        cos, sin = self.cos[start : start + t], self.sin[start : start + t]  # (T, D) each
        xf = x.to(self.rope_dtype)  # (B, H, T, D)
        rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)  # (B, H, T, D)
        return (xf * cos + rotated * sin).type_as(x)  # (B, H, T, D)

    def _attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        tq, tk = q.shape[2], k.shape[2]
        gqa = q.shape[1] != k.shape[1]
        if tq == tk:
            return F.scaled_dot_product_attention(
                q, k, v, is_causal=True, enable_gqa=gqa
            )  # (B, Hq, Tq, D)
        if tq == 1:
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)  # (B, Hq, 1, D)
        qi = torch.arange(tq, device=q.device)[:, None]  # (Tq, 1)
        kj = torch.arange(tk, device=q.device)[None, :]  # (1, Tk)
        mask = kj <= qi + (tk - tq)  # (Tq, Tk)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, enable_gqa=gqa
        )  # (B, Hq, Tq, D)

    @torch.no_grad()
    def _run(self, tokens: torch.Tensor, cache: DecoderCache | None, start: int) -> torch.Tensor:
        c = self.config
        b, t = tokens.shape
        hq, hkv, hd, f = c.n_heads, c.n_kv_heads, c.head_dim, c.d_ff
        x = F.embedding(tokens, self.embed)  # (B, T, d)
        for i, lw in enumerate(self.layer_weights):
            h = _rms_norm(x, lw["attn_norm"], c.norm_eps)  # (B, T, d)
            q, k, v = (h @ lw["wqkv"]).split(
                [hq * hd, hkv * hd, hkv * hd], dim=-1
            )  # (B, T, *) each
            q = self._rope(q.view(b, t, hq, hd).transpose(1, 2), start)  # (B, Hq, T, D)
            k = self._rope(k.view(b, t, hkv, hd).transpose(1, 2), start)  # (B, Hkv, T, D)
            v = v.view(b, t, hkv, hd).transpose(1, 2)  # (B, Hkv, T, D)
            if cache is not None:
                k, v = cache.layers[i].write(start, k, v)  # (B, Hkv, start+T, D) each
            o = self._attention(q, k, v).transpose(1, 2).reshape(b, t, hq * hd)  # (B, T, Hq*D)
            x = x + o @ lw["wo"]  # (B, T, d)
            h = _rms_norm(x, lw["mlp_norm"], c.norm_eps)  # (B, T, d)
            gate, up = (h @ lw["w13"]).split([f, f], dim=-1)  # (B, T, F) each
            x = x + (F.silu(gate) * up) @ lw["w_down"]  # (B, T, d)
        h = _rms_norm(x, self.final_norm, c.norm_eps)  # (B, T, d)
        return h @ self.head  # (B, T, vocab)


def decoder(config: DecoderConfig, weights: Mapping[str, torch.Tensor]) -> TorchDecoder:
    """Build the tiny decoder from weights named as in attnspec.specs.decoder_weights.make_weights."""
    return TorchDecoder(config, weights)
