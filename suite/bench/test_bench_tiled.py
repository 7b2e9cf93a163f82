"""FlashAttention-style tiled attention, and torch's fused SDPA on the same shapes for scale."""

import pytest

from attnspec.specs.cost import attention_traffic, tiled_attention_traffic
from attnspec.suite.bench.common import Inputs, check_attention, matmul_probe, measure, need
from attnspec.suite.plugin import session_of

pytestmark = [pytest.mark.bench, pytest.mark.benchmark(group="tiled attention")]


def case_text(case):
    return f"B={case['B']} H={case['Hq']}/{case['Hkv']} T={case['T']} D={case['D']}"


def test_tiled_attention(bench, impl, dtype, case):
    """Causal tiled attention (online softmax over key blocks) on fresh queries each round."""
    need(impl, dtype, "tiled_attention")
    B, Hq, Hkv, D, T, blk = (case[k] for k in ("B", "Hq", "Hkv", "D", "T", "block"))
    inputs = Inputs(impl, dtype)
    k = inputs.normal(B, Hkv, T, D)  # (B, Hkv, T, D)
    v = inputs.normal(B, Hkv, T, D)  # (B, Hkv, T, D)

    def check(timed):
        check_attention(inputs, timed.result, *timed.args, causal=True, what=f"tiled {case}")

    measure(
        bench,
        impl,
        dtype,
        lambda q, k, v: impl.tiled_attention(q, k, v, causal=True, block_q=blk, block_k=blk),
        lambda: (inputs.normal(B, Hq, T, D), k, v),
        group="tiled attention",
        variant=f"tiled {blk}x{blk}",
        case=case_text(case),
        shape=case,
        cost=lambda E: tiled_attention_traffic(B, Hq, Hkv, T, T, D, D, E, True, blk, blk),
        clause="FLASH-EQ-ATTN",
        check=check,
        floor_args=inputs.minimal(3),
        probe=lambda: matmul_probe(
            bench, impl, dtype, B * Hkv, T * Hq // Hkv, D, blk, "Q@Kᵀ block"
        ),
    )


def test_sdpa_baseline(bench, request, dtype, case):
    """torch.nn.functional.scaled_dot_product_attention on the tiled benchmark's shapes."""
    torch = pytest.importorskip("torch")
    from attnspec.implementations.torch_impl import TorchImplementation

    session = session_of(request.config)
    device = session.device if session else "cpu"
    sdpa = TorchImplementation(device)
    sdpa.name = "torch SDPA"
    B, Hq, Hkv, D, T = (case[k] for k in ("B", "Hq", "Hkv", "D", "T"))
    inputs = Inputs(sdpa, dtype)
    k = inputs.normal(B, Hkv, T, D)  # (B, Hkv, T, D)
    v = inputs.normal(B, Hkv, T, D)  # (B, Hkv, T, D)

    def attend(q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, enable_gqa=Hq != Hkv
        )  # (B, Hq, T, D)

    def check(timed):
        check_attention(inputs, timed.result, *timed.args, causal=True, what=f"SDPA {case}")

    measure(
        bench,
        sdpa,
        dtype,
        attend,
        lambda: (inputs.normal(B, Hq, T, D), k, v),
        group="tiled attention",
        variant="sdpa",
        case=case_text(case),
        shape=case,
        cost=lambda E: attention_traffic(B, Hq, Hkv, T, T, D, D, E, causal=True),
        clause="ATTN-REF",
        check=check,
        floor_args=inputs.minimal(3),
        probe=lambda: matmul_probe(bench, sdpa, dtype, B * Hq, T, D, T, "Q@Kᵀ"),
    )
