"""The tiny Llama-style decoder's configuration, seeded weights and analytic sizes.

The architecture is Llama's (Touvron et al., "LLaMA", 2023; as written in gpt-fast's
model.py): token embedding, per layer `x += attn(rms_norm(x))` and
`x += mlp(rms_norm(x))`, a final RMSNorm and a linear LM head, optionally tied to the
embedding. Every implementation builds the same function from the same weight dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Standard deviation of the logits the seeded weights aim at: large enough that the
#: greedy top-1 is usually clear of the top-2 by far more than float32 rounding, small
#: enough that nothing overflows in float16.
LOGIT_STD = 3.0


@dataclass(frozen=True, kw_only=True)
class DecoderConfig:
    """Shape of the tiny decoder. `max_len` is the KV-cache capacity in tokens.

    It satisfies attnspec.specs.cost.DecoderShape: FLOPs and bytes per step come from
    attnspec.specs.cost.decoder_prefill_cost / decoder_decode_step_cost, never from here.
    """

    vocab: int
    d_model: int
    layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    tied_embeddings: bool
    max_len: int
    rope_base: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in (
            "vocab",
            "d_model",
            "layers",
            "n_heads",
            "n_kv_heads",
            "head_dim",
            "d_ff",
            "max_len",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DecoderConfig.{name} must be a positive int, got {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"DecoderConfig.n_kv_heads ({self.n_kv_heads}) must divide n_heads ({self.n_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"DecoderConfig.head_dim must be even for RoPE, got {self.head_dim}")
        if not self.rope_base > 1.0:
            raise ValueError(f"DecoderConfig.rope_base must be > 1, got {self.rope_base!r}")
        if not self.norm_eps > 0.0:
            raise ValueError(f"DecoderConfig.norm_eps must be > 0, got {self.norm_eps!r}")
        if not isinstance(self.tied_embeddings, bool):
            raise ValueError(
                f"DecoderConfig.tied_embeddings must be a bool, got {self.tied_embeddings!r}"
            )

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def layer_param_count(self) -> int:
        """Parameters of one layer: two norms, q/k/v/o projections, the SwiGLU MLP."""
        d = self.d_model
        attn = d * self.q_dim + 2 * d * self.kv_dim + self.q_dim * d
        return 2 * d + attn + 3 * d * self.d_ff

    def param_count(self) -> int:
        """All parameters; a tied LM head is counted once (it is the embedding)."""
        head = 0 if self.tied_embeddings else self.d_model * self.vocab
        return (
            self.vocab * self.d_model + self.layers * self.layer_param_count() + self.d_model + head
        )


def make_weights(config: DecoderConfig, seed: int) -> dict[str, np.ndarray]:
    """Seeded float64 weights for `config`, as a flat dict (x @ W convention, W is (in, out)).

    Names and shapes (d = d_model, Hq*D = n_heads*head_dim, Hkv*D = n_kv_heads*head_dim):
        embed                 (vocab, d)
        layers.{i}.attn_norm  (d,)
        layers.{i}.wq         (d, Hq*D)      heads are consecutive blocks of D columns
        layers.{i}.wk         (d, Hkv*D)
        layers.{i}.wv         (d, Hkv*D)
        layers.{i}.wo         (Hq*D, d)
        layers.{i}.mlp_norm   (d,)
        layers.{i}.w_gate     (d, F)         F = d_ff
        layers.{i}.w_up       (d, F)
        layers.{i}.w_down     (F, d)
        final_norm            (d,)
        lm_head               (d, vocab)     absent when tied: logits = h @ embed.T

    Projections are N(0, 1/fan_in) so each sub-block returns O(1) activations; norm
    weights are 1 + N(0, 0.1^2) so that a missing norm weight shows. The LM head (or the
    tied embedding) is scaled so that logits have standard deviation about LOGIT_STD.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    rng = np.random.default_rng(seed)
    d, f = config.d_model, config.d_ff

    def normal(shape: tuple[int, ...], fan_in: int, gain: float = 1.0) -> np.ndarray:
        return rng.standard_normal(shape) * (gain / np.sqrt(fan_in))  # shape

    def norm_weight() -> np.ndarray:
        return 1.0 + 0.1 * rng.standard_normal(d)  # (d,)

    head_gain = LOGIT_STD
    w: dict[str, np.ndarray] = {}
    w["embed"] = rng.standard_normal((config.vocab, d)) * (
        head_gain / np.sqrt(d) if config.tied_embeddings else 1.0
    )
    for i in range(config.layers):
        p = f"layers.{i}."
        w[p + "attn_norm"] = norm_weight()  # (d,)
        w[p + "wq"] = normal((d, config.q_dim), d)  # (d, Hq*D)
        w[p + "wk"] = normal((d, config.kv_dim), d)  # (d, Hkv*D)
        w[p + "wv"] = normal((d, config.kv_dim), d)  # (d, Hkv*D)
        w[p + "wo"] = normal((config.q_dim, d), config.q_dim)  # (Hq*D, d)
        w[p + "mlp_norm"] = norm_weight()  # (d,)
        w[p + "w_gate"] = normal((d, f), d)  # (d, F)
        w[p + "w_up"] = normal((d, f), d)  # (d, F)
        w[p + "w_down"] = normal((f, d), f)  # (F, d)
    w["final_norm"] = norm_weight()  # (d,)
    if not config.tied_embeddings:
        w["lm_head"] = normal((d, config.vocab), d, head_gain)  # (d, vocab)
    return w


def weight_shapes(config: DecoderConfig) -> dict[str, tuple[int, ...]]:
    """The names and shapes `make_weights(config, seed)` returns, in order."""
    d, f = config.d_model, config.d_ff
    shapes: dict[str, tuple[int, ...]] = {"embed": (config.vocab, d)}
    for i in range(config.layers):
        p = f"layers.{i}."
        shapes[p + "attn_norm"] = (d,)
        shapes[p + "wq"] = (d, config.q_dim)
        shapes[p + "wk"] = (d, config.kv_dim)
        shapes[p + "wv"] = (d, config.kv_dim)
        shapes[p + "wo"] = (config.q_dim, d)
        shapes[p + "mlp_norm"] = (d,)
        shapes[p + "w_gate"] = (d, f)
        shapes[p + "w_up"] = (d, f)
        shapes[p + "w_down"] = (f, d)
    shapes["final_norm"] = (d,)
    if not config.tied_embeddings:
        shapes["lm_head"] = (d, config.vocab)
    return shapes


def check_weights(config: DecoderConfig, weights: Mapping[str, Any]) -> None:
    """Raise ValueError unless `weights` has exactly the names and shapes of `weight_shapes`."""
    expected = weight_shapes(config)
    missing = [n for n in expected if n not in weights]
    extra = [n for n in weights if n not in expected]
    if missing or extra:
        raise ValueError(
            f"weights: missing {missing}, unexpected {extra} "
            f"(tied_embeddings={config.tied_embeddings})"
        )
    for name, shape in expected.items():
        got = tuple(getattr(weights[name], "shape", ()))
        if got != shape:
            raise ValueError(f"weights[{name!r}] must have shape {shape}, got {got}")
