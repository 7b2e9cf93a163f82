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
