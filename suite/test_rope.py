"""RoPE clauses (rotary position embedding as an op), one test each, and the hand-derived
Llama 3 frequencies the reference must reproduce (docs/rope.md)."""

import math

import numpy as np
import pytest

from attnspec.specs.cost_rope import rope_cost
from attnspec.specs.reference.rope import inv_freq
from attnspec.suite.harness import verify


def test_rope_ref(impl, dtype):
    """rope equals the float64 reference within the dtype's rounding plus a float32 phase's error."""
    verify("ROPE-REF", impl, dtype)


def test_rope_relative(impl, dtype):
    """Logits after RoPE are unchanged when query and key positions shift together."""
    verify("ROPE-RELATIVE", impl, dtype)


def test_rope_norm(impl, dtype):
    """rope keeps every rotated pair's norm and leaves the dims past rotary_dim untouched."""
    verify("ROPE-NORM", impl, dtype)


def test_rope_positions(impl, dtype):
    """A shuffled packed batch at each sequence's own offsets equals each sequence alone."""
    verify("ROPE-POSITIONS", impl, dtype)


def test_rope_styles(impl, dtype):
    """neox and gptj rotate their documented pairs and agree under the documented permutation."""
    verify("ROPE-STYLES", impl, dtype)


def test_rope_scaling(impl, dtype):
    """Linear and Llama 3 scaled frequencies give the reference's rotation."""
    verify("ROPE-SCALING", impl, dtype)


# Llama 3.1 8B: head dim 128, base 500000, factor 8, low 1, high 4, original context 8192.
# Derived by hand in docs/rope.md: f_i = 500000^(-i/64), wavelength 2π/f_i; bands at 2048
# and 8192 positions.
LLAMA31_BY_HAND = {
    0: 1.0,  # high band: kept
    1: 0.814617,  # 500000^(-1/64) = exp(-13.12236/64)
    28: 0.00321145,  # wavelength 1956.5 < 2048: kept
    29: 0.00216657,  # wavelength 2401.7: s = (8192/2401.7 - 1)/3 = 0.80362, × 0.82817
    32: 0.000524846,  # 1/707.107 = 0.00141421, wavelength 4442.9: s = 0.28129, × 0.37112
    34: 0.000178508,  # wavelength 6695.1: s = 0.07453, × 0.19021
    35: 9.55621e-05,  # wavelength 8218.7 > 8192: 0.000764497 / 8
    63: 3.06893e-07,  # 500000^(-63/64) / 8
}


@pytest.mark.parametrize("i", list(LLAMA31_BY_HAND))
def test_reference_llama3_frequencies(i):
    """The reference's Llama 3.1 frequencies equal the ones derived by hand in docs/rope.md."""
    f = inv_freq(128, 500000.0, ("llama3", 8.0, 1.0, 4.0, 8192))
    assert math.isclose(f[i], LLAMA31_BY_HAND[i], rel_tol=2e-5), (i, f[i])


def test_reference_linear_frequencies():
    """Linear scaling divides every frequency by its factor: f_i = 10000^(-2i/64) / 4."""
    f = inv_freq(64, 10000.0, ("linear", 4.0))
    assert np.allclose(f, 10000.0 ** (-np.arange(0, 64, 2) / 64) / 4, rtol=1e-15, atol=0)
    assert math.isclose(f[16], 0.0025, rel_tol=1e-12)  # 10000^(-1/2) / 4


def test_rope_cost_llama3_8b_prefill_chunk():
    """rope_cost of a 2048-token bf16 chunk of Llama-3-8B's q and k (40 heads of 128) is the
    hand-derived 3·T·H·D FLOPs over 2·E·T·H·D + 8·T bytes, far below any ridge."""
    c = rope_cost(2048, 40, 128, 2)
    assert (c.flops, c.bytes) == (31_457_280, 41_959_424)
    assert round(c.intensity, 4) == 0.7497
    partial = rope_cost(16, 8, 256, 2, rotary_dim=64, cache_bytes=4)  # GPT-J, a float32 cache
    assert (partial.flops, partial.bytes) == (
        3 * 16 * 8 * 64,
        2 * 2 * 16 * 8 * 256 + 8 * 16 + 4 * 16 * 64,
    )
    with pytest.raises(ValueError):
        rope_cost(1, 1, 64, 2, rotary_dim=65)
