"""Real-model attention shapes: explicit examples for every attention, KV, tiled and decoder clause.

Each preset is a model's query heads Hq, KV heads Hkv, head dim D and context length, from the
model's published config.json (Hugging Face hub): num_attention_heads, num_key_value_heads,
head_dim (or hidden_size / num_attention_heads) and max_position_embeddings. Clauses draw a
slice of at most SLICE_KV_HEADS KV heads with their whole query-head group, so the head map of
the real group size is exercised at the cost of a couple of heads.
"""

from __future__ import annotations

from dataclasses import dataclass

SLICE_KV_HEADS = 2  # KV heads kept per drawn preset shape: two groups show a wrong head map


@dataclass(frozen=True)
class Preset:
    """One model's attention shape."""

    name: str
    Hq: int
    Hkv: int
    D: int
    context: int

    @property
    def group(self) -> int:
        """Query heads per KV head (Hq / Hkv)."""
        return self.Hq // self.Hkv

    @property
    def slice_kv_heads(self) -> int:
        """KV heads a clause keeps (all of them when the model has fewer than the slice)."""
        return min(self.Hkv, SLICE_KV_HEADS)


PRESETS: tuple[Preset, ...] = (
    Preset("Llama-3-8B", Hq=32, Hkv=8, D=128, context=8192),
    Preset("Llama-3-70B", Hq=64, Hkv=8, D=128, context=8192),
    Preset("Mistral-7B", Hq=32, Hkv=8, D=128, context=32768),
    Preset("Qwen2-7B", Hq=28, Hkv=4, D=128, context=32768),
    Preset("Gemma-2-9B", Hq=16, Hkv=8, D=256, context=8192),
    Preset("Phi-3-mini", Hq=32, Hkv=32, D=96, context=4096),
    Preset("GPT-2", Hq=12, Hkv=12, D=64, context=1024),
    Preset("Falcon-7B", Hq=71, Hkv=1, D=64, context=2048),
)
BY_NAME = {p.name.lower(): p for p in PRESETS}


def get(name: str) -> Preset:
    """The preset called `name` (case-insensitive); a ValueError lists the known ones."""
    try:
        return BY_NAME[name.lower()]
    except KeyError:
        known = ", ".join(p.name for p in PRESETS)
        raise ValueError(f"unknown model shapes {name!r}; choose from {known}") from None


@dataclass(frozen=True)
class ModelConfig:
    """A whole Llama-style model's dimensions, from its config.json (hidden_size, num_hidden_layers,
    intermediate_size, vocab_size, tie_word_embeddings): enough for weight and KV-cache bytes.

    It satisfies attnspec.specs.cost.DecoderShape, so the decoder cost functions take it directly.
    """

    name: str
    layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    vocab: int
    tied_embeddings: bool = False

    def param_count(self) -> int:
        """Every parameter: embedding, per layer 2 norms + q/k/v/o + SwiGLU, final norm, LM head."""
        d, q, kv = self.d_model, self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        layer = 2 * d + d * q + 2 * d * kv + q * d + 3 * d * self.d_ff
        head = 0 if self.tied_embeddings else d * self.vocab
        return self.vocab * d + self.layers * layer + d + head


# Llama-style (RMSNorm, GQA, SwiGLU) presets only: GPT-2's and Falcon's two-matrix GELU MLPs
# do not fit the decoder cost model. Small extras (Qwen2's QKV biases, Gemma-2's extra norms)
# are left out: under 0.1% of the weights.
MODELS: tuple[ModelConfig, ...] = (
    ModelConfig("Llama-3-8B", 32, 4096, 32, 8, 128, 14336, 128256),
    ModelConfig("Llama-3-70B", 80, 8192, 64, 8, 128, 28672, 128256),
    ModelConfig("Mistral-7B", 32, 4096, 32, 8, 128, 14336, 32000),
    ModelConfig("Qwen2-7B", 28, 3584, 28, 4, 128, 18944, 152064),
    ModelConfig("Gemma-2-9B", 42, 3584, 16, 8, 256, 14336, 256000, tied_embeddings=True),
    ModelConfig("Phi-3-mini", 32, 3072, 32, 32, 96, 8192, 32064),
)
MODELS_BY_NAME = {m.name.lower(): m for m in MODELS}


def model(name: str) -> ModelConfig:
    """The whole-model config called `name` (case-insensitive); a ValueError lists the known ones."""
    try:
        return MODELS_BY_NAME[name.lower()]
    except KeyError:
        known = ", ".join(m.name for m in MODELS)
        raise ValueError(
            f"no whole-model config for {name!r} (weights and layers are needed for a latency "
            f"curve); choose from {known}"
        ) from None
