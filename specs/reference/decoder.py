"""Float64 reference forward of the tiny Llama-style decoder (full recompute, causal).

Sources: RMSNorm, Zhang & Sennrich 2019 (x / sqrt(mean(x^2) + eps) * w); RoPE, Su et al.
2021, in the rotate-half layout of Hugging Face's Llama (the first D/2 features pair
with the last D/2, frequency base^(-2j/D)); GQA, Ainslie et al. 2023 (query head h
reads kv head h // (Hq // Hkv)); SwiGLU, Shazeer 2020 (w_down(silu(x w_gate) * x w_up)).
Token t (0-based) sits at RoPE position t. Weight names are those of
attnspec.specs.decoder_weights.make_weights.
"""

from __future__ import annotations

import numpy as np

from attnspec.specs.decoder_weights import DecoderConfig
from attnspec.specs.dtypes import round_to


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight  # (..., d)


def rope(x: np.ndarray, positions: np.ndarray, base: float) -> np.ndarray:
    """Rotate feature pairs (j, j + D/2) of x (B, H, T, D) by angle position * base^(-2j/D)."""
    d = x.shape[-1]
    inv_freq = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)  # (D/2,)
    angles = positions.astype(np.float64)[:, None] * inv_freq[None, :]  # (T, D/2)
    cos = np.concatenate([np.cos(angles), np.cos(angles)], axis=-1)  # (T, D)
    sin = np.concatenate([np.sin(angles), np.sin(angles)], axis=-1)  # (T, D)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]  # (B, H, T, D/2)
    rotated = np.concatenate([-x2, x1], axis=-1)  # (B, H, T, D)
    return x * cos + rotated * sin  # (B, H, T, D)


def causal_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """softmax(q k^T / sqrt(D) + causal mask) v with GQA; q (B, Hq, T, D), k, v (B, Hkv, T, D)."""
    hq, hkv, t, d = q.shape[1], k.shape[1], q.shape[2], q.shape[3]
    k = np.repeat(k, hq // hkv, axis=1)  # (B, Hq, T, D)
    v = np.repeat(v, hq // hkv, axis=1)  # (B, Hq, T, D)
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(d)  # (B, Hq, T, T)
    s = np.where(np.tril(np.ones((t, t), dtype=bool)), s, -np.inf)  # (B, Hq, T, T)
    p = np.exp(s - s.max(axis=-1, keepdims=True))  # (B, Hq, T, T)
    p = p / p.sum(axis=-1, keepdims=True)  # (B, Hq, T, T)
    return p @ v  # (B, Hq, T, D)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))  # (..., F)


@np.errstate(over="ignore", invalid="ignore")  # a half-precision baseline may overflow: by design
def decoder_forward(
    config: DecoderConfig,
    weights: dict[str, np.ndarray],
    tokens: np.ndarray,
    *,
    precision: str = "float64",
) -> np.ndarray:
    """Logits (B, T, vocab) of tokens (B, T) at positions 0..T-1.

    With `precision` other than float64 every stored intermediate is rounded to that dtype:
    the "plain same-precision computation" whose error sets the tolerance budget.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(
            f"tokens must be a 2-D integer array (B, T), got {tokens.dtype} {tokens.shape}"
        )
    if tokens.size and (tokens.min() < 0 or tokens.max() >= config.vocab):
        raise ValueError(
            f"tokens must lie in [0, {config.vocab}), got [{tokens.min()}, {tokens.max()}]"
        )

    def rnd(x: np.ndarray) -> np.ndarray:
        return round_to(x, precision)

    w = {name: rnd(np.asarray(a, dtype=np.float64)) for name, a in weights.items()}
    b, t = tokens.shape
    hq, hkv, hd, eps = config.n_heads, config.n_kv_heads, config.head_dim, config.norm_eps
    positions = np.arange(t)  # (T,)

    def heads(x: np.ndarray, h: int) -> np.ndarray:
        return rnd(x).reshape(b, t, h, hd).transpose(0, 2, 1, 3)  # (B, H, T, D)

    x = w["embed"][tokens]  # (B, T, d)
    for i in range(config.layers):
        p = f"layers.{i}."
        h = rnd(rms_norm(x, w[p + "attn_norm"], eps))  # (B, T, d)
        q = rnd(rope(heads(h @ w[p + "wq"], hq), positions, config.rope_base))  # (B, Hq, T, D)
        k = rnd(rope(heads(h @ w[p + "wk"], hkv), positions, config.rope_base))  # (B, Hkv, T, D)
        v = heads(h @ w[p + "wv"], hkv)  # (B, Hkv, T, D)
        o = (
            rnd(causal_attention(q, k, v)).transpose(0, 2, 1, 3).reshape(b, t, hq * hd)
        )  # (B, T, Hq*D)
        x = rnd(x + rnd(o @ w[p + "wo"]))  # (B, T, d)
        h = rnd(rms_norm(x, w[p + "mlp_norm"], eps))  # (B, T, d)
        gated = rnd(rnd(silu(rnd(h @ w[p + "w_gate"]))) * rnd(h @ w[p + "w_up"]))  # (B, T, F)
        x = rnd(x + rnd(gated @ w[p + "w_down"]))  # (B, T, d)
    h = rnd(rms_norm(x, w["final_norm"], eps))  # (B, T, d)
    head = w["embed"].T if config.tied_embeddings else w["lm_head"]  # (d, vocab)
    return rnd(h @ head)  # (B, T, vocab)
