"""FLOPs as torch counts them: the torch implementation's decomposed paths under FlopCounterMode.

COST-COUNTED checks the analytic cost model (specs/cost.py) against these counts. The paths
are the ones whose matmuls FlopCounterMode sees (attention as two batched matmuls, not SDPA,
which it reports as 0 on the CPU), run on the CPU so the decoder's SDPA counts as 0 too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from attnspec.implementations.torch_impl import TorchImplementation
from attnspec.implementations.torch_impl.attention import attention_grouped
from attnspec.implementations.torch_impl.decoder import TorchDecoder, decoder
from attnspec.implementations.torch_impl.dtypes import TORCH_DTYPES
from attnspec.implementations.torch_impl.matmul import matmul
from attnspec.specs.decoder_weights import DecoderConfig


class FlopCounter:
    """The arrays, the counted paths and the counting that COST-COUNTED needs (CPU only)."""

    name = "torch-decomposed"
    dtypes = tuple(TORCH_DTYPES)

    def __init__(self) -> None:
        self._cpu = TorchImplementation("cpu")

    def asarray(self, x: np.ndarray, dtype: str) -> torch.Tensor:
        """A CPU tensor copy of `x` in `dtype` ("int64" for tokens)."""
        return self._cpu.asarray(x, dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        """A numpy copy of a tensor (bfloat16 as float32)."""
        return self._cpu.to_numpy(x)

    def counted_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool
    ) -> torch.Tensor:
        """Attention as two batched matmuls per kv head group (B, Hq, Tq, Dv)."""
        return attention_grouped(q, k, v, causal=causal)

    def counted_matmul(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """X (B, D) @ W (D, F)."""
        return matmul(x, w)

    def counted_decoder(
        self, config: DecoderConfig, weights: Mapping[str, torch.Tensor]
    ) -> TorchDecoder:
        """The tiny decoder built from `weights`."""
        return decoder(config, weights)

    def count_flops(
        self, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> tuple[Any, dict[str, int]]:
        """Run fn under FlopCounterMode; return its result and the FLOPs counted per aten op."""
        with FlopCounterMode(display=False) as counter:
            out = fn(*args, **kwargs)
        return out, {str(op): int(n) for op, n in counter.get_flop_counts()["Global"].items()}


counter = FlopCounter()
