"""Cascade decode cost: a batch sharing a prompt reads the shared keys once.

Batching amortises weights, never the cache, except the part of the cache that requests
share: cascade attention (FlashInfer's cascade, vLLM's cascade_attention) attends every
request's query to the shared prefix in one call, so the prefix's keys and values are read
once for the batch instead of once per request. Conventions as in attnspec.specs.cost (matmul FLOPs
only, minimal bytes); the partial states' lse are float32 (`lse_bytes` each).

COST-CASCADE checks the hand-derived figures of one batch: 32 requests sharing a 4,096-token
system prompt with 128 tokens each, Llama-3-8B attention (Hq = 32, Hkv = 8, D = 128, bf16).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from attnspec.specs.clauses import clause
from attnspec.specs.cost import Cost, _element_size, _lengths, _positive_int, attention_cost
from attnspec.specs.cost import varlen_attention_cost as varlen_attention_cost
from attnspec.specs.cost_clauses import element_sizes
from attnspec.specs.cost_counted import mismatch
from attnspec.specs.runner import Target

# 32 requests, a 4,096-token shared prompt, 128 own tokens each, Llama-3-8B attention, bf16.
SHARED = {"P": 4096, "suffix": [128] * 32, "Hq": 32, "Hkv": 8, "D": 128, "E": 2}
SHARED_DENSE = (2_214_592_512, 554_172_416)  # FLOPs, bytes: 32 x (1 query over 4,224 keys)
SHARED_CASCADE = (2_214_592_512, 35_405_824)  # the same FLOPs; the prompt read once
SHARED_RATIO = 15.65  # dense bytes / cascade bytes, 2 decimals


@dataclass(frozen=True)
class CascadeCost:
    """One decode step of a batch over a shared prefix: dense (each request reads the prefix)
    and cascade (prefix once + suffixes + merge)."""

    dense: Cost
    prefix: Cost
    suffixes: Cost
    merge: Cost

    @property
    def cascade(self) -> Cost:
        """The three cascade passes together."""
        return self.prefix + self.suffixes + self.merge

    @property
    def byte_ratio(self) -> float:
        """Dense bytes over cascade bytes: the speedup predicted for a memory-bound decode."""
        return self.dense.bytes / self.cascade.bytes


def cascade_decode_cost(
    P: int,
    suffix_lens: list[int],
    Hq: int,
    Hkv: int,
    D: int,
    E: int | float,
    lse_bytes: int | float = 4,
) -> CascadeCost:
    """One decode token for each of B requests whose caches are a shared P-token prefix plus
    suffix_lens[b] own tokens (the new one included).

    dense: ``varlen_attention_cost`` of one query over P + suffix_lens[b] keys per request.
    cascade: the prefix pass is ``attention_cost(1, Hq, Hkv, B, P, ...)`` (B queries, non-causal,
    the prefix K/V read once), the suffix pass ``varlen_attention_cost`` over the suffixes; each
    writes an lse per query head (B·Hq·lse_bytes), and the merge reads both outputs and lse and
    writes the output: E·B·Hq·3D + 2·lse_bytes·B·Hq bytes, no matmul FLOPs. FLOPs are the same
    both ways: cascade changes how often the prefix is read, not what is computed.
    """
    P = _positive_int("P", P)
    lens = _lengths("suffix_lens", suffix_lens)
    if min(lens) < 1:
        raise ValueError(f"suffix_lens must be >= 1 (the new token is a request's own), got {lens}")
    E, lb = _element_size("E", E), _element_size("lse_bytes", lse_bytes)
    B = len(lens)
    dense = varlen_attention_cost([1] * B, [P + n for n in lens], Hq, Hkv, D, D, E, causal=True)
    pre = attention_cost(1, Hq, Hkv, B, P, D, D, E, causal=False)
    suf = varlen_attention_cost([1] * B, lens, Hq, Hkv, D, D, E, causal=True)
    lse = lb * B * Hq  # one lse per query head, written by each pass
    merge = Cost(0, E * B * Hq * 3 * D + 2 * lse)
    return CascadeCost(dense, pre + Cost(0, lse), suf + Cost(0, lse), merge)


@clause(
    "COST-CASCADE",
    "cascade_decode_cost reads a shared prefix once for the batch: 32 requests sharing a "
    "4,096-token prompt with 128 tokens each (Hq=32, Hkv=8, D=128, E=2) move 554,172,416 "
    "bytes decoded densely and 35,405,824 by cascade (prefix once, suffixes, merge), a "
    "predicted 15.65× speedup at the same 2,214,592,512 FLOPs",
    needs=("cascade_decode_cost", "varlen_attention_cost", "attention_cost"),
)
def cost_cascade(t: Target, data: st.DataObject) -> None:
    m, s = t.impl, SHARED
    c = m.cascade_decode_cost(s["P"], s["suffix"], s["Hq"], s["Hkv"], s["D"], s["E"])
    checks = [
        ("dense (flops, bytes)", (c.dense.flops, c.dense.bytes), SHARED_DENSE),
        ("cascade (flops, bytes)", (c.cascade.flops, c.cascade.bytes), SHARED_CASCADE),
        ("byte_ratio (2 decimals)", round(c.byte_ratio, 2), SHARED_RATIO),
    ]
    for what, got, want in checks:
        if got != want:
            raise mismatch(t.where(f"cascade_decode_cost {what} for 32 x (4096 + 128)"), got, want)
    B = data.draw(st.integers(1, 8), label="requests")
    P = data.draw(st.integers(1, 4096), label="prefix")
    lens = [data.draw(st.integers(1, 512), label="suffix") for _ in range(B)]
    Hkv = data.draw(st.integers(1, 8), label="Hkv")
    Hq = Hkv * data.draw(st.integers(1, 8), label="Hq/Hkv")
    D = data.draw(st.integers(1, 256), label="D")
    E = data.draw(element_sizes, label="E")
    c = m.cascade_decode_cost(P, lens, Hq, Hkv, D, E)
    call = f"cascade_decode_cost({P}, {lens}, {Hq}, {Hkv}, {D}, {E})"
    dense = m.varlen_attention_cost([1] * B, [P + n for n in lens], Hq, Hkv, D, D, E, True)
    if (c.dense.flops, c.dense.bytes) != (dense.flops, dense.bytes):
        raise mismatch(t.where(f"{call}.dense vs varlen_attention_cost"), c.dense, dense)
    if c.cascade.flops != dense.flops:
        raise mismatch(
            t.where(f"{call}.cascade.flops vs the dense FLOPs"), c.cascade.flops, dense.flops
        )
    once = E * Hkv * P * 2 * D  # the prefix K/V: read once by cascade, B times densely
    saved = (B - 1) * once
    extra = c.cascade.bytes - (dense.bytes - saved)  # queries, partial outputs, lse, merge
    if not 0 < extra <= E * B * Hq * 6 * D + 16 * B * Hq:
        raise mismatch(
            t.where(f"{call}: cascade bytes minus (dense bytes - (B-1) prefix reads)"),
            extra,
            f"in (0, {E * B * Hq * 6 * D + 16 * B * Hq}] (q again, partial outputs, lse, merge)",
        )
