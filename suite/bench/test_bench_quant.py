"""Decode over an 8-bit (fp8 e4m3) paged cache against a 16-bit one of the same shape.

One decode token for each of B sequences of T cached tokens, read through shuffled 16-token
blocks, twice per implementation: pages in the 16-bit working dtype (bfloat16, or float16
where the implementation has no bfloat16) and pages in float8_e4m3fn with a scale per KV head.
Decode is memory-bound, so the speedup to expect is the bytes ratio (attnspec.specs.cost:
decode_attention_cost against quantized_decode_cost at E_kv = 1): the fp8 row names its
measured speed relative to the 16-bit run beside that prediction. Both outputs are checked
against float64 attention over the cache as stored (the fp8 one over its dequantized codes).
"""

import math

import numpy as np
import pytest

from attnspec.specs.attention import logit_error
from attnspec.specs.cost import decode_attention_cost, quantized_decode_cost
from attnspec.specs.reference.quant import MAX, dequantize, quantize
from attnspec.specs.reference.serving import dense, sequence_attention, sequence_magnitude
from attnspec.specs.tolerance import assert_close
from attnspec.suite.bench.common import Inputs, measure, need

pytestmark = [pytest.mark.bench, pytest.mark.benchmark(group="decode attention")]

GROUP = "decode attention"
CASE = {"B": 2, "T": 1024, "Hq": 8, "Hkv": 2, "D": 64}
BLOCK = 16
KV_DTYPE = "float8_e4m3fn"
MAX_ROUNDS = 5
HALVES = ("bfloat16", "float16")  # the 16-bit cache, in this order of preference


def half_dtype(impl, dtype):
    """The 16-bit working dtype of the comparison: the session's if 16-bit, else the
    implementation's bfloat16 (float16) for a float32 session; None for float64."""
    if dtype in HALVES:
        return dtype
    have = tuple(getattr(impl, "dtypes", None) or ())
    return next((h for h in HALVES if h in have), None) if dtype == "float32" else None


def fill(impl, inputs, half, keys, values, quant):
    """A pool of BLOCK-token blocks in shuffled order holding every sequence, the
    paged_attention arguments of one decode token each, and what the pool means (float64)."""
    B, (T, Hkv, D) = len(keys), keys[0].shape
    per = math.ceil(T / BLOCK)
    table = inputs.rng.permutation(B * per).reshape(B, per).astype(np.int32)
    extra = {}
    if quant:
        scales = [
            np.max(np.abs(np.concatenate(x)), axis=(0, 2)) / MAX[KV_DTYPE] for x in (keys, values)
        ]
        scales = [np.asarray(s, np.float32).astype(np.float64) for s in scales]  # (Hkv,) each
        extra = {
            "kv_dtype": KV_DTYPE,
            "k_scale": impl.asarray(scales[0], "float32"),
            "v_scale": impl.asarray(scales[1], "float32"),
        }
    cache = impl.paged_kv_cache(B * per, BLOCK, Hkv, D, half, **extra)
    pos = np.arange(T)
    for b in range(B):
        slots = impl.asarray(table[b, pos // BLOCK] * BLOCK + pos % BLOCK, "int32")
        impl.paged_kv_write(
            cache, impl.asarray(keys[b], half), impl.asarray(values[b], half), slots
        )
    args = {
        "block_table": impl.asarray(table, "int32"),
        "seq_lens": impl.asarray(np.full(B, T), "int32"),
        "cu_seqlens_q": impl.asarray(np.arange(B + 1), "int32"),
    }
    if quant:
        keys = [dequantize(quantize(k, KV_DTYPE, scales[0]), scales[0]) for k in keys]
        values = [dequantize(quantize(v, KV_DTYPE, scales[1]), scales[1]) for v in values]
    return cache, args, keys, values


@pytest.mark.parametrize("cache_kind", ["16-bit", "fp8"])
def test_quant_decode(bench, impl, dtype, cache_kind):
    """Decode over an fp8 paged cache reads half the bytes of a 16-bit one: measured speedup
    beside the bytes ratio."""
    need(impl, dtype, "paged_kv_cache", "paged_kv_write", "paged_attention")
    half = half_dtype(impl, dtype)
    if half is None:
        pytest.skip(f"{impl.name} has no 16-bit dtype to compare an fp8 cache with at {dtype}")
    quant = cache_kind == "fp8"
    if quant and "kv_quant" not in (getattr(impl, "options", None) or ()):
        pytest.skip(f"{impl.name} does not declare the 'kv_quant' option")
    B, T, Hq, Hkv, D = (CASE[k] for k in ("B", "T", "Hq", "Hkv", "D"))
    inputs = Inputs(impl, half)
    keys = [inputs.numpy(inputs.normal(T, Hkv, D)) for _ in range(B)]  # (T, Hkv, D) each
    values = [inputs.numpy(inputs.normal(T, Hkv, D)) for _ in range(B)]
    cache, args, keys, values = fill(impl, inputs, half, keys, values, quant)
    text = f"B={B} T={T} H={Hq}/{Hkv} D={D} paged {half}"

    def check(timed):
        q = inputs.numpy(timed.args[0])  # (B, Hq, D)
        out = np.asarray(impl.to_numpy(timed.result), np.float64)
        for b in range(B):
            qb, kv = q[b : b + 1], (keys[b], values[b])
            assert_close(
                out[b : b + 1],
                sequence_attention(qb, *kv, causal=True),
                dtype=half,
                n=max(D, T),
                baseline=sequence_attention(qb, *kv, causal=True, precision=half),
                # The clauses' terms (PAGED-EQ-DENSE, QKV-EQ-DEQUANT): without them one lucky
                # baseline set the budget, and 12 of 80 correct float16 decodes failed it.
                magnitude=sequence_magnitude(qb, *kv, causal=True),
                typical=logit_error(half, *(dense(x) for x in (qb, *kv)), causal=True),
                what=f"{cache_kind} paged decode {text}: sequence {b}",
            )

    def cost(E):
        if quant:
            return quantized_decode_cost(B, Hq, Hkv, T, D, 1, E, scales=Hkv)
        return decode_attention_cost(B, Hq, Hkv, T, D, E)

    measure(
        bench, impl, half, lambda q: impl.paged_attention(q, cache, causal=True, **args),
        lambda: (inputs.normal(B, Hq, D),), group=GROUP, variant=f"paged {cache_kind} cache",
        case=text, shape=CASE, cost=cost, clause="QKV-EQ-DEQUANT" if quant else "PAGED-EQ-DENSE",
        check=check, extras={"kv_dtype": KV_DTYPE if quant else half}, max_rounds=MAX_ROUNDS,
    )  # fmt: skip
    if quant:
        compare_with_16bit(
            bench, text, cost(2).bytes, decode_attention_cost(B, Hq, Hkv, T, D, 2).bytes
        )


def compare_with_16bit(bench, case, fp8_bytes, half_bytes):
    """Name the fp8 run's measured speedup over the 16-bit run of the same case and impl beside
    the bytes ratio the cost model predicts."""
    last = bench.state.records[-1]
    mine = {
        r.variant: r
        for r in bench.state.records
        if (r.group, r.case, r.impl) == (GROUP, case, last.impl)
    }
    predicted = half_bytes / fp8_bytes
    last.extras["predicted_speedup_over_16bit"] = predicted
    base = mine.get("paged 16-bit cache")
    if base is None or base.seconds is None or last.seconds is None:
        return
    measured = base.seconds / last.seconds
    last.extras["measured_speedup_over_16bit"] = measured
    last.variant = f"paged fp8 cache ({measured:.2f}x 16-bit's speed; predicted {predicted:.2f}x)"
