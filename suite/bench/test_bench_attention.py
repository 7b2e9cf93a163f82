"""Attention: decode over a growing cache (the memory wall) and causal prefill over T."""

import pytest

from attnspec.specs.cost import attention_traffic
from attnspec.suite.bench.common import Inputs, check_attention, matmul_probe, measure, need

pytestmark = pytest.mark.bench


def decode(bench, impl, dtype, case, group):
    """Time one query token per sequence over a T-token cache: it reads the whole cache once,
    so its % of roof is its fraction of the calibrated main-memory bandwidth."""
    need(impl, dtype, "attention")
    B, Hq, Hkv, D, T = (case[k] for k in ("B", "Hq", "Hkv", "D", "T"))
    inputs = Inputs(impl, dtype)
    k = inputs.normal(B, Hkv, T, D)  # (B, Hkv, T, D)
    v = inputs.normal(B, Hkv, T, D)  # (B, Hkv, T, D)

    def check(timed):
        check_attention(inputs, timed.result, *timed.args, causal=True, what=f"decode {case}")

    measure(
        bench,
        impl,
        dtype,
        lambda q, k, v: impl.attention(q, k, v, causal=True),
        lambda: (inputs.normal(B, Hq, 1, D), k, v),
        group=group,
        variant="decode",
        case=f"B={B} H={Hq}/{Hkv} T={T}",
        shape=case,
        cost=lambda E: attention_traffic(B, Hq, Hkv, 1, T, D, D, E, causal=True),
        clause="ATTN-REF",
        check=check,
        floor_args=inputs.minimal(3),
        probe=lambda: matmul_probe(bench, impl, dtype, B * Hkv, T, D, Hq // Hkv, "K@qᵀ"),
    )


@pytest.mark.benchmark(group="decode attention")
def test_decode_attention(bench, impl, dtype, case):
    """MHA decode over T cached tokens and B sequences: time grows with T, intensity does not."""
    decode(bench, impl, dtype, case, "decode attention")


@pytest.mark.benchmark(group="long-context decode")
def test_decode_long_context(bench, impl, dtype, case):
    """GQA decode (Hq=32, Hkv=8, D=128) over a 16k-token cache, as a fraction of the roof."""
    decode(bench, impl, dtype, case, "long-context decode")


@pytest.mark.benchmark(group="prefill attention")
def test_prefill_attention(bench, impl, dtype, case):
    """Causal self-attention over a T-token prompt: intensity grows with T."""
    need(impl, dtype, "attention")
    B, Hq, Hkv, D, T = (case[k] for k in ("B", "Hq", "Hkv", "D", "T"))
    inputs = Inputs(impl, dtype)
    k = inputs.normal(B, Hkv, T, D)  # (B, Hkv, T, D)
    v = inputs.normal(B, Hkv, T, D)  # (B, Hkv, T, D)

    def check(timed):
        check_attention(inputs, timed.result, *timed.args, causal=True, what=f"prefill {case}")

    measure(
        bench,
        impl,
        dtype,
        lambda q, k, v: impl.attention(q, k, v, causal=True),
        lambda: (inputs.normal(B, Hq, T, D), k, v),
        group="prefill attention",
        variant="prefill",
        case=f"B={B} H={Hq}/{Hkv} T={T} D={D}",
        shape=case,
        cost=lambda E: attention_traffic(B, Hq, Hkv, T, T, D, D, E, causal=True),
        clause="ATTN-REF",
        check=check,
        floor_args=inputs.minimal(3),
        probe=lambda: matmul_probe(bench, impl, dtype, B * Hq, T, D, T, "Q@Kᵀ"),
    )
