"""Cost-model mutants: the byte and FLOP formula bugs that public roofline tools have shipped."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import attnspec.implementations.numpy_impl as numpy_impl
import attnspec.specs.cost as cost
import attnspec.specs.cost_curve as cost_curve
from attnspec.implementations.discovery import flop_counter
from attnspec.specs.cost import Cost, visible_pairs
from attnspec.specs.cost_clauses import CostSubject
from attnspec.suite.meta.mutants import Mutant, derive

MODEL_FUNCTIONS = (
    "matmul_cost",
    "attention_cost",
    "decode_attention_cost",
    "kv_cache_bytes",
    "kv_append_cost",
    "tiled_attention_cost",
    "linear_attention_recurrent_step_cost",
    "linear_attention_chunked_cost",
    "decoder_layer_cost",
    "decoder_prefill_cost",
    "decoder_decode_step_cost",
    "ridge",
    "attainable_flops",
    "is_memory_bound",
)


def model(name: str, **broken: Callable[..., Any]) -> SimpleNamespace:
    """attnspec.specs.cost with the given functions replaced."""
    funcs = {f: getattr(cost, f) for f in MODEL_FUNCTIONS}
    return SimpleNamespace(name=f"mutant-{name}", **{**funcs, **broken})


def attention_no_output(B, Hq, Hkv, Tq, Tk, D, Dv, E, causal) -> Cost:
    right = cost.attention_cost(B, Hq, Hkv, Tq, Tk, D, Dv, E, causal)
    return Cost(right.flops, right.bytes - E * B * Hq * Tq * Dv)


def matmul_no_output(B, D, F, E) -> Cost:
    return Cost(2 * B * D * F, E * (B * D + D * F))


def attention_kv_with_hq(B, Hq, Hkv, Tq, Tk, D, Dv, E, causal) -> Cost:
    right = cost.attention_cost(B, Hq, Hkv, Tq, Tk, D, Dv, E, causal)
    return Cost(right.flops, E * B * (Hq * Tq * D + Hq * Tk * (D + Dv) + Hq * Tq * Dv))


def decode_kv_with_hq(B, Hq, Hkv, T, D, E) -> Cost:
    return attention_kv_with_hq(B, Hq, Hkv, 1, T, D, D, E, True)


def attention_pairs(pairs: Callable[[int, int], float]) -> Callable[..., Cost]:
    """attention_cost with the causal pair count replaced by pairs(Tq, Tk)."""

    def broken(B, Hq, Hkv, Tq, Tk, D, Dv, E, causal) -> Cost:
        right = cost.attention_cost(B, Hq, Hkv, Tq, Tk, D, Dv, E, causal)
        n = pairs(Tq, Tk) if causal else visible_pairs(Tq, Tk, False)
        return Cost(2 * B * Hq * n * (D + Dv), right.bytes)

    return broken


def in_bits(fn: Callable[..., Any], e_position: int) -> Callable[..., Any]:
    """fn called with E × 8: bytes per element confused with bits per byte-element."""

    def broken(*args: Any) -> Any:
        args = list(args)
        args[e_position] = args[e_position] * 8
        return fn(*args)

    return broken


def matmul_weights_per_row(B, D, F, E) -> Cost:
    return Cost(2 * B * D * F, E * (B * D + B * D * F + B * F))


def matmul_output_as_d(B, D, F, E) -> Cost:
    return Cost(2 * B * D * F, E * (B * D + D * F + B * D))


def ridge_inverted(peak_flops: float, bandwidth: float) -> float:
    return bandwidth / peak_flops


def memory_bound_at_ridge(intensity: float, peak_flops: float, bandwidth: float) -> bool:
    return intensity <= cost.ridge(peak_flops, bandwidth)


def matmul_flops_as_macs(B, D, F, E) -> Cost:
    return Cost(B * D * F, E * (B * D + D * F + B * F))


COUNTER = flop_counter()
NUMPY_CACHE = derive(numpy_impl, "numpy", kv_cache=numpy_impl.kv_cache)
COUNTED = ("COST-COUNTED",) if COUNTER is not None else ()


def mutant(name: str, bug: str, kills: tuple[str, ...], pair: Any = None, **broken: Any) -> Mutant:
    return Mutant(name, bug, CostSubject(model(name, **broken), pair), kills)


def counted(name: str, bug: str, kills: tuple[str, ...], **broken: Any) -> Mutant:
    """A mutant checked by the pure clauses and, where torch imports, by COST-COUNTED."""
    return mutant(name, bug, kills + COUNTED, COUNTER, **broken)


ALL = [
    counted(
        "attention-no-output-write",
        "attention bytes forget writing the output O",
        (),
        attention_cost=attention_no_output,
    ),
    counted(
        "matmul-no-output-write",
        "matmul bytes forget writing Y (E(BD + DF))",
        ("COST-MATMUL",),
        matmul_cost=matmul_no_output,
    ),
    counted(
        "gqa-bytes-with-query-heads",
        "K and V bytes counted with Hq heads instead of Hkv (LLM-Viewer's GQA bug)",
        ("COST-DECODE-ATTN",),
        attention_cost=attention_kv_with_hq,
        decode_attention_cost=decode_kv_with_hq,
    ),
    counted(
        "causal-not-halved",
        "causal attention FLOPs counted over all Tq·Tk pairs",
        (),
        attention_cost=attention_pairs(lambda Tq, Tk: Tq * Tk),
    ),
    counted(
        "causal-vague-half",
        "causal attention FLOPs counted as Tq·Tk/2 instead of the visible pairs",
        (),
        attention_cost=attention_pairs(lambda Tq, Tk: Tq * Tk / 2),
    ),
    counted(
        "bits-for-bytes",
        "element size taken in bits (E × 8) in every byte formula",
        ("COST-MATMUL", "COST-DECODE-ATTN"),
        matmul_cost=in_bits(cost.matmul_cost, 3),
        attention_cost=in_bits(cost.attention_cost, 7),
        decode_attention_cost=in_bits(cost.decode_attention_cost, 5),
    ),
    mutant(
        "kv-bytes-bits-vs-implementation",
        "kv_cache_bytes in bits, checked against the numpy cache's nbytes",
        ("COST-KV-BYTES",),
        NUMPY_CACHE,
        kv_cache_bytes=in_bits(cost.kv_cache_bytes, 5),
    ),
    mutant(
        "kv-bytes-keys-only",
        "the KV cache counted without its V half",
        ("COST-KV-BYTES",),
        NUMPY_CACHE,
        kv_cache_bytes=lambda layers, B, Hkv, D, T, E: layers * Hkv * D * T * B * E,
    ),
    mutant(
        "matmul-flops-as-macs",
        "a multiply-add counted as one FLOP",
        ("COST-MATMUL",),
        matmul_cost=matmul_flops_as_macs,
    ),
    mutant(
        "matmul-weights-per-row",
        "W re-read for every row of X, so batching never raises intensity",
        ("COST-MATMUL-LIMITS",),
        matmul_cost=matmul_weights_per_row,
    ),
    mutant(
        "matmul-output-as-d",
        "the output counted as B×D instead of B×F (asymmetric in D and F)",
        ("COST-MATMUL-LIMITS",),
        matmul_cost=matmul_output_as_d,
    ),
    mutant(
        "ridge-inverted",
        "ridge computed as bandwidth / peak",
        ("COST-RIDGE",),
        ridge=ridge_inverted,
        is_memory_bound=lambda i, p, b: i < ridge_inverted(p, b),
    ),
    mutant(
        "memory-bound-at-ridge",
        "an op exactly at the ridge called memory-bound (<= instead of <)",
        ("COST-RIDGE",),
        is_memory_bound=memory_bound_at_ridge,
    ),
    mutant(
        "roof-without-peak",
        "attainable FLOP/s never capped by the peak",
        ("COST-RIDGE",),
        attainable_flops=lambda i, p, b: i * b,
    ),
]

MUTANTS = [m for m in ALL if m.kills]  # without torch, the COST-COUNTED-only ones drop out

HIERARCHY_FUNCTIONS = (
    "tiled_attention_traffic",
    "attention_traffic",
    "attention_cost",
    "tiled_attention_cost",
    "hierarchical_verdict",
)


def rereads_always_dram(traffic: Any, cache_bytes: Any) -> tuple[float, float]:
    return float(traffic.total), float(traffic.total)


MUTANTS.append(
    Mutant(
        "rereads-always-dram",
        "every re-read charged to main memory, whatever the cache holds (the flat roofline)",
        CostSubject(
            SimpleNamespace(
                name="mutant-rereads-always-dram",
                level_bytes=rereads_always_dram,
                **{f: getattr(cost, f) for f in HIERARCHY_FUNCTIONS},
            )
        ),
        ("COST-HIERARCHY",),
    )
)

# --- COST-LATENCY-CURVE: the latency-throughput curve of a decode step (attnspec.specs.cost_curve) ---


def curve_model(name: str, **broken: Callable[..., Any]) -> CostSubject:
    """attnspec.specs.cost_curve's curve functions with the given ones replaced."""
    funcs = {f: getattr(cost_curve, f) for f in ("curve_point", "max_batch", "latency_curve")}
    return CostSubject(SimpleNamespace(name=f"mutant-{name}", **{**funcs, **broken}))


def point_cache_amortised(shape, B, T, E, peak, bandwidth, memory=None) -> Any:
    """A step that reads one request's cache, as if the batch shared it like the weights."""
    right = cost_curve.curve_point(shape, B, T, E, peak, bandwidth, memory)
    others = cost.kv_cache_bytes(shape.layers, 1, shape.n_kv_heads, shape.head_dim, T + 1, E)
    nbytes = right.bytes - (B - 1) * others
    return cost_curve.CurvePoint(
        B, T, right.flops, nbytes, right.compute_s, nbytes / bandwidth, right.fits
    )


def curve_cache_amortised(shape, T, E, peak, bandwidth, memory=None, batches=cost_curve.GRID):
    right = cost_curve.latency_curve(shape, T, E, peak, bandwidth, memory, batches)
    points = tuple(
        point_cache_amortised(shape, p.B, T, E, peak, bandwidth, memory) for p in right.points
    )
    return cost_curve.Curve(
        T, points, right.max_batch, right.compute_knee, right.half_throughput_knee
    )


def curve_without_memory(shape, T, E, peak, bandwidth, memory=None, batches=cost_curve.GRID):
    """Every batch size up to MAX_BATCH, whether or not its caches fit."""
    return cost_curve.latency_curve(shape, T, E, peak, bandwidth, None, batches)


def curve_knee_from_weights(shape, T, E, peak, bandwidth, memory=None, batches=cost_curve.GRID):
    """The compute knee of the weights' matmuls alone (the textbook's B near the ridge), as if
    the caches added no bytes."""
    right = cost_curve.latency_curve(shape, T, E, peak, bandwidth, memory, batches)
    knee = cost_curve.compute_knee(shape, 1, E, peak, bandwidth)  # a context of one token
    return cost_curve.Curve(T, right.points, right.max_batch, knee, right.half_throughput_knee)


MUTANTS += [
    Mutant(
        "curve-cache-amortised",
        "a decode step reads one request's KV cache for the whole batch, as it reads the weights",
        curve_model(
            "curve-cache-amortised",
            curve_point=point_cache_amortised,
            latency_curve=curve_cache_amortised,
        ),
        ("COST-LATENCY-CURVE",),
    ),
    Mutant(
        "curve-ignores-memory",
        "the latency curve runs to B=1024 though the caches no longer fit the device memory",
        curve_model("curve-ignores-memory", latency_curve=curve_without_memory),
        ("COST-LATENCY-CURVE",),
    ),
    Mutant(
        "curve-knee-from-weights",
        "the compute knee taken from the weights' matmuls alone, ignoring the caches' bytes",
        curve_model("curve-knee-from-weights", latency_curve=curve_knee_from_weights),
        ("COST-LATENCY-CURVE",),
    ),
]

MUTANTS += [
    mutant(
        "quant-kv-no-scale-bytes",
        "an 8-bit cache's bytes leave out its K and V scales (kv_cache_bytes at E = 1 only)",
        ("COST-QUANT-KV",),
        quantized_kv_bytes=lambda layers, B, Hkv, D, T, E, **_: cost.kv_cache_bytes(
            layers, B, Hkv, D, T, E
        ),
        quantized_decode_cost=cost.quantized_decode_cost,
    ),
]
