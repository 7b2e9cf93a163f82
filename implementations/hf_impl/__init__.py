"""Hugging Face transformers as an implementation: `hf` (needs the `[hf]` extra, transformers>=5).

- `kv_cache`: a transformers StaticCache of one layer, allocated up front (implementations.
  hf_impl.kv_cache);
- `decoder(config, weights)`: a LlamaForCausalLM carrying the suite's weights, generating with
  its own StaticCache (attnspec.implementations.hf_impl.decoder).

float64 is not offered: transformers computes RMSNorm and RoPE in float32 whatever the model's
dtype, so a float64 model is a float32 model in parts, which DEC-CROSS-IMPL rightly flags.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

try:
    import transformers
except ImportError as exc:  # one line for --impl hf without the extra
    raise ImportError(
        "the hf implementation needs transformers>=5: pip install -e '.[hf]'"
    ) from exc

from attnspec.implementations.hf_impl.decoder import HFDecoder
from attnspec.implementations.hf_impl.kv_cache import HFKVCache
from attnspec.implementations.library_base import TorchLibrary
from attnspec.specs.decoder_weights import DecoderConfig

if int(transformers.__version__.split(".")[0]) < 5:
    raise ImportError(
        f"the hf implementation needs transformers>=5, found {transformers.__version__}"
    )


FLOAT64 = (
    "transformers computes RMSNorm and RoPE in float32 whatever the model's dtype, so a float64 "
    "Llama is a float32 one in parts (DEC-CROSS-IMPL would flag it)"
)


class HFImplementation(TorchLibrary):
    """StaticCache and LlamaForCausalLM on one device."""

    name = "hf"
    library = "transformers"
    dtypes = ("float32", "float16", "bfloat16", "float64")  # float64: kv_cache only

    def kv_cache(
        self, batch: int, kv_heads: int, head_dim: int, max_len: int, dtype: str
    ) -> HFKVCache:
        """A StaticCache for (batch, kv_heads, max_len, head_dim); `dtype` is the dtype's name."""
        return HFKVCache(batch, kv_heads, head_dim, max_len, dtype, self.device)

    def decoder(self, config: DecoderConfig, weights: Mapping[str, torch.Tensor]) -> HFDecoder:
        """A LlamaForCausalLM computing the suite's tiny decoder from `weights`."""
        dtype = next(iter(weights.values())).dtype
        if dtype == torch.float64:
            self.refuse(dtype, FLOAT64)
        return HFDecoder(config, weights)


impl = HFImplementation()
