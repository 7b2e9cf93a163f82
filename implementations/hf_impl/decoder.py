"""The suite's tiny decoder as a transformers LlamaForCausalLM, generating with a StaticCache.

The suite's weights (attnspec.specs.decoder_weights: x @ W with W (in, out), rotate-half RoPE, RMSNorm
weights multiplying the normalised x) map one to one onto Llama's modules; nn.Linear stores
W (out, in), so each projection is transposed. head_dim is given explicitly, so d_model need
not be n_heads * head_dim. `prefill` makes a StaticCache of config.max_len tokens and `decode`
appends to it in place; RoPE positions continue from the cache's length.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from transformers import LlamaConfig, LlamaForCausalLM, StaticCache

from attnspec.specs.decoder_weights import DecoderConfig, check_weights

LAYER_NAMES = {  # suite name -> (Llama module path, transposed)
    "attn_norm": ("input_layernorm", False),
    "wq": ("self_attn.q_proj", True),
    "wk": ("self_attn.k_proj", True),
    "wv": ("self_attn.v_proj", True),
    "wo": ("self_attn.o_proj", True),
    "mlp_norm": ("post_attention_layernorm", False),
    "w_gate": ("mlp.gate_proj", True),
    "w_up": ("mlp.up_proj", True),
    "w_down": ("mlp.down_proj", True),
}


def llama_config(config: DecoderConfig) -> LlamaConfig:
    """The LlamaConfig of the suite's DecoderConfig.

    transformers refuses a hidden size that n_heads does not divide, though with head_dim
    given explicitly its Llama never relies on it: the config is made with a size it accepts
    and the real d_model is set afterwards (the validator runs once, at construction).
    """
    hf = LlamaConfig(
        vocab_size=config.vocab,
        hidden_size=config.n_heads * config.head_dim,
        intermediate_size=config.d_ff,
        num_hidden_layers=config.layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads,
        head_dim=config.head_dim,
        max_position_embeddings=config.max_len,
        rms_norm_eps=config.norm_eps,
        tie_word_embeddings=config.tied_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_base},
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    hf.hidden_size = config.d_model
    return hf


def hf_state_dict(config: DecoderConfig, weights: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The suite's weights under Llama's names, projections transposed to (out, in)."""
    state = {
        "model.embed_tokens.weight": weights["embed"],
        "model.norm.weight": weights["final_norm"],
    }
    if not config.tied_embeddings:
        state["lm_head.weight"] = weights["lm_head"].T  # (vocab, d)
    for i in range(config.layers):
        for name, (module, transposed) in LAYER_NAMES.items():
            w = weights[f"layers.{i}.{name}"]
            state[f"model.layers.{i}.{module}.weight"] = w.T if transposed else w
    return state


class HFDecoder:
    """forward (no cache), prefill (a new StaticCache) and decode (append to it)."""

    def __init__(self, config: DecoderConfig, weights: Mapping[str, torch.Tensor]) -> None:
        check_weights(config, weights)
        kinds = {(w.dtype, w.device) for w in weights.values()}
        if len(kinds) != 1:
            raise ValueError(
                f"weights must share one dtype and device, got {sorted(map(str, kinds))}"
            )
        dtype, device = next(iter(kinds))
        self.config = config
        self.hf_config = llama_config(config)
        model = LlamaForCausalLM(self.hf_config)  # tiny: its random init costs little
        state = hf_state_dict(config, weights)
        if config.tied_embeddings:
            state["lm_head.weight"] = state["model.embed_tokens.weight"]
        model.load_state_dict({k: v.to("cpu", torch.float32) for k, v in state.items()})
        rotary = model.model.rotary_emb
        inv_freq = rotary.inv_freq.clone()  # float32; .to(dtype) would round it
        self.hf: Any = cast(Any, model).to(device, dtype).eval()
        rotary.inv_freq = inv_freq.to(device)

    def check_tokens(self, tokens: torch.Tensor, start: int) -> None:
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.dtype != torch.int64:
            raise ValueError(f"tokens must be a 2-D int64 torch.Tensor (B, T), got {tokens!r:.80}")
        if start + int(tokens.shape[1]) > self.config.max_len:
            raise ValueError(
                f"too many tokens: {start} cached + {tokens.shape[1]} new exceed max_len "
                f"{self.config.max_len}"
            )

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, vocab) at positions 0..T-1, no cache."""
        self.check_tokens(tokens, 0)
        return self.hf(tokens, use_cache=False).logits  # (B, T, vocab)

    @torch.no_grad()
    def prefill(self, tokens: torch.Tensor) -> tuple[torch.Tensor, StaticCache]:
        """Logits of the prompt and a new StaticCache of max_len tokens holding its K/V."""
        self.check_tokens(tokens, 0)
        cache = StaticCache(config=self.hf_config, max_cache_len=self.config.max_len)
        out = self.hf(tokens, cache=cache, use_cache=True)
        return out.logits, cache  # (B, T, vocab)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, cache: StaticCache) -> tuple[torch.Tensor, StaticCache]:
        """Logits of T >= 1 tokens after the cached ones (positions continue from the cache)."""
        if not isinstance(cache, StaticCache):
            raise ValueError(
                f"cache must come from this model's prefill, got {type(cache).__name__}"
            )
        self.check_tokens(tokens, int(cache.get_seq_length()))
        out = self.hf(tokens, cache=cache, use_cache=True)
        return out.logits, cache  # (B, T, vocab)
