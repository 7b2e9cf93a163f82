"""torch.nn.attention.flex_attention as an implementation: `flex`.

The causal mask is a `mask_mod` (bottom-right aligned: key j is visible to query i iff
j <= i + Tk - Tq) turned into a BlockMask; a soft-cap is a `score_mod`. Conformance runs
flex_attention eagerly: torch then computes the masked scores in full (exact, slow), so the
suite's clauses check the mask_mod/score_mod logic and the GQA mapping; the fused kernel that
torch.compile generates from the same mods is what the benchmarks time (`compiled` below, one
compilation per shape, outside the timed region).

flex_attention returns the natural-log log-sum-exp (return_lse=True), so `attention` takes
return_lse ("lse"). A query whose mask_mod hides every key gets output 0 and lse -inf
(measured, torch 2.13, eager); with no keys at all flex raises (an empty reduction), so the
adapter answers that case itself with 0 and -inf: "empty_rows" is declared.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from functools import cache
from typing import Any

import torch
from torch.nn.attention.flex_attention import (
    BlockMask,
    create_block_mask,
    flex_attention,
)

from attnspec.implementations.library_base import TorchLibrary
from attnspec.implementations.validate import check_attention_shapes

EAGER_WARNING = "flex_attention called without torch.compile"  # eager is the point here

MaskMod = Callable[[Any, Any, Any, Any], Any]
ScoreMod = Callable[[Any, Any, Any, Any, Any], Any]


def bottom_right_causal(Tq: int, Tk: int) -> MaskMod:
    """mask_mod: query i sees key j iff j <= i + (Tk - Tq)."""
    offset = Tk - Tq

    def causal(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        return kv_idx <= q_idx + offset

    return causal


def soft_cap(cap: float) -> ScoreMod:
    """score_mod: cap · tanh(score / cap), applied before the mask (Gemma-2's logit soft-cap)."""

    def capped(score: Any, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        return cap * torch.tanh(score / cap)

    return capped


@cache
def causal_block_mask(Tq: int, Tk: int, device: str) -> BlockMask:
    """The BlockMask of bottom_right_causal, built once per shape and device."""
    return create_block_mask(bottom_right_causal(Tq, Tk), None, None, Tq, Tk, device=device)


@cache
def compiled() -> Callable[..., Any]:
    """flex_attention under torch.compile (dynamic=False: one kernel per shape)."""
    return torch.compile(flex_attention, dynamic=False)


class FlexImplementation(TorchLibrary):
    """flex_attention with mask_mod / score_mod; eager unless `compile` is set."""

    name = "flex"
    library = "torch's flex_attention"
    dtypes = ("float32", "float16", "bfloat16", "float64")
    options = frozenset({"lse", "empty_rows"})

    def __init__(self, device: str | None = None, *, compile: bool = False) -> None:
        super().__init__(device)
        self.compile = compile

    def on_device(self, device: str) -> FlexImplementation:
        return FlexImplementation(device, compile=self.compile)

    def compiled(self) -> FlexImplementation:
        """The same implementation running torch.compile(flex_attention)."""
        return FlexImplementation(str(self.device), compile=True)

    def flex(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        block_mask: BlockMask | None,
        score_mod: ScoreMod | None = None,
        scale: float | None = None,
        return_lse: bool = False,
    ) -> Any:
        """flex_attention on q (B, Hq, Tq, D), k (B, Hkv, Tk, D), v (B, Hkv, Tk, Dv); with
        return_lse, (o, lse (B, Hq, Tq))."""
        fn: Callable[..., Any] = compiled() if self.compile else flex_attention  # type: ignore[assignment]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=EAGER_WARNING)
            out = fn(
                q,
                k,
                v,
                score_mod=score_mod,
                block_mask=block_mask,
                scale=scale,
                enable_gqa=q.shape[1] != k.shape[1],
                return_lse=return_lse,
            )  # (B, Hq, Tq, Dv), or with the lse (B, Hq, Tq)
        return out

    def probe(self, dtype: torch.dtype) -> Callable[[], object]:
        def call() -> object:
            q = torch.zeros(1, 2, 4, 16, dtype=dtype, device=self.device)  # (B, Hq, Tq, D)
            kv = torch.zeros(1, 1, 8, 16, dtype=dtype, device=self.device)  # (B, Hkv, Tk, D)
            return self.flex(q, kv, kv, block_mask=causal_block_mask(4, 8, str(self.device)))

        return call

    def attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        causal: bool,
        scale: float | None = None,
        return_lse: bool = False,
    ) -> Any:
        """softmax(scale q k^T + bottom-right mask_mod) v; with return_lse, also the lse."""
        B, Hq, Tq, _, _, Tk, Dv = check_attention_shapes(q, k, v, causal=causal)
        self.require(q.dtype)
        if Tk == 0:  # flex reduces over the keys: none at all is answered here
            o = torch.zeros((B, Hq, Tq, Dv), dtype=q.dtype, device=q.device)
            lse = torch.full((B, Hq, Tq), -math.inf, dtype=torch.float32, device=q.device)
            return (o, lse) if return_lse else o
        mask = causal_block_mask(Tq, Tk, str(self.device)) if causal else None
        sc = None if scale is None else float(scale)
        return self.flex(q, k, v, block_mask=mask, scale=sc, return_lse=return_lse)

    # --- Serving-shaped ops (sliding window, soft-cap, varlen, paged) ------------------------
    # They follow the serving contract being written in a parallel branch; until it lands the
    # suite has no clauses for them, so none is exposed here. Each is a mask_mod or score_mod
    # over the same `flex` call: a window is `bottom_right_causal(...) & (q_idx + Tk - Tq -
    # kv_idx < window)`, the soft-cap is `soft_cap(cap)`, varlen is a document mask over
    # cu_seqlens, and a paged cache is a BlockMask over the block table.


impl = FlexImplementation()
