"""Cost clauses, one test each, plus hand-derivation checks of attnspec.specs.cost itself.

The clause tests without an `impl` argument check the cost model alone (the "spec" column
of the conformance table); COST-KV-BYTES also measures each implementation's cache. An
implementation that brings its own cost functions (`matmul_cost`, `decode_attention_cost`,
`kv_cache_bytes`, `ridge`, ...) has them checked by the same clauses in its own column
(TestPluggedInCostModel); one without them shows those clauses as skipped.
"""

import numpy as np
import pytest

import attnspec.implementations.numpy_impl as numpy_impl
import attnspec.specs.cost as cost
from attnspec.implementations.discovery import flop_counter
from attnspec.specs.cost import Cost
from attnspec.specs.cost_clauses import CostSubject
from attnspec.specs.decoder_weights import DecoderConfig
from attnspec.specs.profiles import KILL
from attnspec.specs.runner import run_clause
from attnspec.specs.tolerance import ClauseFailure
from attnspec.suite.harness import verify
from attnspec.suite.meta.mutants import derive

MODEL = CostSubject(cost)


def test_cost_matmul():
    """Matmul costs 2BDF FLOPs and E(BD+DF+BF) bytes and reproduces the textbook table."""
    verify("COST-MATMUL", MODEL)


def test_cost_matmul_limits():
    """Matmul intensity rises with B toward 2DF/E(D+F), is about B for small B, symmetric in D, F."""
    verify("COST-MATMUL-LIMITS", MODEL)


def test_cost_decode_attn():
    """Decode attention reads the cache once: intensity about (Hq/Hkv)·2/E whatever B and T."""
    verify("COST-DECODE-ATTN", MODEL)


def test_cost_kv_bytes(impl, dtype):
    """kv_cache_bytes is 2·layers·Hkv·D·T·B·E and equals the implementation's cache nbytes
    (the implementation's own kv_cache_bytes when it has one, else the suite's)."""
    own = callable(getattr(impl, "kv_cache_bytes", None))
    verify("COST-KV-BYTES", CostSubject(impl if own else cost, impl), dtype)


def test_cost_counted(dtype):
    """Analytic FLOPs and bytes equal FlopCounterMode's count and the tensors' sizes."""
    counter = flop_counter()
    if counter is None:
        pytest.skip("torch is not installed: there is no FlopCounterMode to count with")
    verify("COST-COUNTED", CostSubject(cost, counter), dtype)


def test_cost_ridge():
    """Memory-bound iff intensity < peak/bandwidth; H100 SXM ridge 295.2 splits B=256 from 512."""
    verify("COST-RIDGE", MODEL)


class TestPluggedInCostModel:
    """The cost clauses on an implementation's own cost functions, in its own column."""

    def test_cost_matmul(self, impl):
        """The implementation's matmul_cost gives 2BDF FLOPs, E(BD+DF+BF) bytes, the textbook."""
        verify("COST-MATMUL", CostSubject(impl))

    def test_cost_matmul_limits(self, impl):
        """The implementation's matmul intensity rises with B toward its limit."""
        verify("COST-MATMUL-LIMITS", CostSubject(impl))

    def test_cost_decode_attn(self, impl):
        """The implementation's decode_attention_cost reads the cache once per step."""
        verify("COST-DECODE-ATTN", CostSubject(impl))

    def test_cost_ridge(self, impl):
        """The implementation's ridge and is_memory_bound split B=256 from B=512 on H100 SXM."""
        verify("COST-RIDGE", CostSubject(impl))


def macs_as_flops(B, D, F, E):
    """A plugged-in matmul_cost that counts multiply-adds as FLOPs (half the FLOPs)."""
    return Cost(B * D * F, E * (B * D + D * F + B * F))


def test_plugged_in_cost_model_is_the_subject():
    """An implementation whose own matmul_cost is wrong fails COST-MATMUL through the plug-in
    path, while the same implementation with the suite's matmul_cost passes it."""
    good = derive(numpy_impl, "plugged-good", matmul_cost=cost.matmul_cost)
    bad = derive(numpy_impl, "mutant-plugged-macs", matmul_cost=macs_as_flops)
    run_clause("COST-MATMUL", CostSubject(good), settings_=KILL)
    with pytest.raises(ClauseFailure, match="matmul_cost"):
        run_clause("COST-MATMUL", CostSubject(bad), settings_=KILL)


def test_textbook_numbers_verbatim():
    """The scaling book's matmul table, D=4096, F=11008, E=2, as printed in README."""
    c = cost.matmul_cost(1, 4096, 11008, 2)
    assert f"{c.flops:,}" == "90,177,536"
    assert f"{c.bytes:,}" == "90,207,744"
    assert f"{c.intensity:.5f}" == "0.99967"
    table = {
        B: f"{cost.matmul_cost(B, 4096, 11008, 2).intensity:.1f}" for B in (1, 16, 64, 256, 512)
    }
    assert table == {1: "1.0", 16: "15.9", 64: "62.7", 256: "235.8", 512: "437.0"}
    assert f"{cost.ridge(989e12, 3.35e12):.1f}" == "295.2"
    assert cost.is_memory_bound(cost.matmul_cost(256, 4096, 11008, 2).intensity, 989e12, 3.35e12)
    assert not cost.is_memory_bound(
        cost.matmul_cost(512, 4096, 11008, 2).intensity, 989e12, 3.35e12
    )


@pytest.mark.parametrize("Tq", range(1, 9))
@pytest.mark.parametrize("Tk", range(1, 9))
def test_visible_pairs_count_the_mask(Tq, Tk):
    """visible_pairs equals the number of True entries of the bottom-right causal mask."""
    i, j = np.arange(Tq)[:, None], np.arange(Tk)[None, :]
    assert cost.visible_pairs(Tq, Tk, causal=True) == int((j <= i + Tk - Tq).sum())
    assert cost.visible_pairs(Tq, Tk, causal=False) == Tq * Tk


def simulated_tiled_bytes(B, Hq, Hkv, Tq, Tk, D, Dv, E, causal, bq, bk):
    """Walk the FlashAttention loops and add up what each query block reads and writes."""
    keys = 0
    for q0 in range(0, Tq, bq):
        last_row = min(q0 + bq, Tq) - 1
        for k0 in range(0, Tk, bk):
            if not causal or k0 <= last_row + Tk - Tq:
                keys += min(bk, Tk - k0)
    return E * B * (Hq * Tq * (D + Dv) + Hkv * keys * (D + Dv))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    ("Tq", "Tk", "bq", "bk"), [(7, 7, 2, 3), (5, 13, 4, 4), (16, 16, 16, 5), (1, 9, 3, 2)]
)
def test_tiled_attention_rereads(causal, Tq, Tk, bq, bk):
    """Tiled bytes equal a loop-by-loop walk; one query block moves what plain attention does."""
    got = cost.tiled_attention_cost(2, 4, 2, Tq, Tk, 8, 6, 2, causal, bq, bk)
    assert got.bytes == simulated_tiled_bytes(2, 4, 2, Tq, Tk, 8, 6, 2, causal, bq, bk)
    plain = cost.attention_cost(2, 4, 2, Tq, Tk, 8, 6, 2, causal)
    assert got.flops == plain.flops
    assert cost.tiled_attention_cost(2, 4, 2, Tq, Tk, 8, 6, 2, causal, Tq, bk).bytes == plain.bytes


def test_prefill_attention_intensity_is_t_over_2():
    """Non-causal MHA prefill with 2-byte elements has intensity T/2 (scaling book)."""
    for T in (128, 1024, 8192):
        assert cost.attention_cost(1, 32, 32, T, T, 128, 128, 2, causal=False).intensity == T / 2


def test_linear_attention_step_is_memory_bound():
    """The recurrent step re-reads its state every token: intensity below 2/E."""
    step = cost.linear_attention_recurrent_step_cost(4, 8, 64, 64, 2)
    assert step.flops == 4 * 4 * 8 * 64 * 65
    assert step.intensity < 1.0
    chunked = cost.linear_attention_chunked_cost(4, 8, 1024, 64, 64, 64, 2)
    assert chunked.intensity > 10 * step.intensity


@pytest.mark.parametrize("tied", [False, True])
def test_decoder_flops_are_2n_per_token_plus_attention(tied):
    """Decoder FLOPs are 2 per matmul weight per token (Kaplan et al. 2020) plus causal attention."""
    config = DecoderConfig(
        vocab=320,
        d_model=64,
        layers=3,
        n_heads=8,
        n_kv_heads=2,
        head_dim=8,
        d_ff=96,
        tied_embeddings=tied,
        max_len=64,
    )
    matmul_weights = 3 * (config.layer_param_count() - 2 * 64) + 64 * 320  # layers + LM head
    B, P = 2, 17
    prompt_pairs = P * (P + 1) // 2
    attention = 3 * 8 * 4 * 8 * prompt_pairs * B  # layers × Hq × 4·D per visible pair
    assert (
        cost.decoder_prefill_cost(config, B, P, 2).flops == 2 * matmul_weights * P * B + attention
    )
    step_attention = 3 * 8 * 4 * 8 * (P + 1) * B  # the new token sees P cached keys and itself
    step = cost.decoder_decode_step_cost(config, B, P, 2).flops
    assert step == 2 * matmul_weights * B + step_attention


def test_decode_step_bytes_weights_amortise_cache_does_not():
    """A second sequence in a decode step adds its cache and activations, never the weights."""
    config = DecoderConfig(vocab=1000, d_model=256, layers=4, n_heads=8, n_kv_heads=2,
                           head_dim=32, d_ff=512, tied_embeddings=False, max_len=4096)  # fmt: skip
    one, two = (cost.decoder_decode_step_cost(config, B, 2048, 2) for B in (1, 2))
    cache = cost.kv_cache_bytes(4, 1, 2, 32, 2049, 2)  # 2048 cached tokens read, 1 written
    activations = 2 * (4 * 2 * 256 + 3 * 256 + 1000)  # layer in/out, embed, head in, logits
    assert two.bytes - one.bytes == cache + activations
    assert two.intensity > one.intensity


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: cost.matmul_cost(0, 4, 4, 2), "B"),
        (lambda: cost.matmul_cost(1, 4.0, 4, 2), "D"),
        (lambda: cost.matmul_cost(1, 4, 4, 0), "E"),
        (lambda: cost.attention_cost(1, 6, 4, 2, 2, 8, 8, 2, True), "Hq"),
        (lambda: cost.decode_attention_cost(1, 8, 2, -3, 8, 2), "T"),
        (lambda: cost.kv_cache_bytes(True, 1, 1, 1, 1, 2), "layers"),
        (lambda: cost.tiled_attention_cost(1, 1, 1, 4, 4, 8, 8, 2, True, 0, 2), "block_q"),
        (lambda: cost.ridge(989e12, 0), "bandwidth"),
        (lambda: cost.is_memory_bound(float("nan"), 1.0, 1.0), "intensity"),
    ],
)
def test_bad_arguments_name_themselves(call, name):
    """Invalid shapes, element sizes and roofs raise ValueError naming the argument."""
    with pytest.raises(ValueError, match=name):
        call()


def test_cost_hierarchy():
    """Main memory sees compulsory bytes plus the re-reads whose working set misses the cache."""
    verify("COST-HIERARCHY", MODEL)
