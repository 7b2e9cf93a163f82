"""Latency vs throughput: the batching trade-off of a decode step, as the roofline predicts it.

One decode step of a batch of B requests, each with T tokens in its KV cache, costs
``decoder_decode_step_cost(shape, B, T, E)``: every weight is read once whatever B is, every
request's whole cache is read, and the FLOPs grow with B. On a roof (peak FLOP/s, bandwidth)
the step takes max(FLOPs / peak, bytes / bandwidth) seconds. Every request gets one token per
step, so

    TPOT = step time,    throughput = B / step time (tokens/s).

While the step is memory-bound, bytes = w + B·r (w: the weights read, r: one request's cache
and activations), so TPOT = (w + B·r) / bandwidth rises in a line with B and throughput
B·bandwidth / (w + B·r) climbs towards its ceiling bandwidth / r: batching amortises the
weights, never the cache. r grows with T, so a longer context lowers the ceiling and reaches
it at a smaller batch — the curve flattens.

Each curve has three marks:

- the memory stop: the largest B whose weights + B·KV(T) fit the device's memory
  (``max_batch``); a curve never goes past it;
- the half-throughput knee: the first B with B·r >= w, where the caches read per step
  outweigh the weights: TPOT has doubled from its B → 0 limit and throughput is half its
  ceiling (``half_throughput_knee``);
- the compute knee: the first B at which the step is compute-bound (FLOPs / peak >= bytes /
  bandwidth), if it comes before the memory stop. FLOPs / bytes is about 2·N·B / (w + B·r)
  (N matmul weights), which stays under 2·N / r + the decode-attention intensity: with a
  long cache it never reaches the ridge, and the step stays memory-bound up to the memory
  stop (Llama-3-8B bf16 on an H100 from T = 386 tokens up, at any B).

Sources: the scaling book ("How to Scale Your Model", Austin et al., 2025, ch. "All About
Transformer Inference": the latency/throughput trade-off of batched decode) and the roofline
(Williams, Waterman and Patterson, CACM 2009). The worked example is in docs/roofline.md,
section "Latency vs throughput".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from attnspec.specs.cost import DecoderShape, decoder_decode_step_cost, kv_cache_bytes

MAX_BATCH = 1024  # the curves run over B = 1 .. MAX_BATCH
CONTEXTS = (1024, 4096, 16384, 32768)  # the context lengths T of the predicted curves
GRID = tuple(2**i for i in range(11))  # 1, 2, 4, ..., 1024: the batch sizes tabulated


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return float(value)


def weight_bytes(shape: DecoderShape, E: int | float) -> float:
    """The bytes the weights occupy in memory: E × every parameter (the embedding table and
    the LM head once each, or once together when tied)."""
    d, q = shape.d_model, shape.n_heads * shape.head_dim
    kv = shape.n_kv_heads * shape.head_dim
    layer = 2 * d + d * q + 2 * d * kv + q * d + 3 * d * shape.d_ff
    head = 0 if getattr(shape, "tied_embeddings", False) else d * shape.vocab
    return _positive("E", E) * (shape.vocab * d + shape.layers * layer + d + head)


def request_kv_bytes(shape: DecoderShape, T: int, E: int | float) -> float:
    """One request's KV cache holding T tokens: 2 × layers × Hkv × D × T × E."""
    return float(kv_cache_bytes(shape.layers, 1, shape.n_kv_heads, shape.head_dim, T, E))


def max_batch(shape: DecoderShape, T: int, E: int | float, memory_bytes: float) -> int:
    """The most requests of T cached tokens whose caches fit beside the weights:
    floor((memory - weights) / KV(T)); 0 when the weights alone do not fit."""
    free = _positive("memory_bytes", memory_bytes) - weight_bytes(shape, E)
    return max(0, math.floor(free / request_kv_bytes(shape, T, E)))


@dataclass(frozen=True)
class CurvePoint:
    """One decode step of B requests at context T on a roof."""

    B: int
    T: int
    flops: float
    bytes: float
    compute_s: float  # FLOPs / peak
    memory_s: float  # bytes / bandwidth
    fits: bool  # weights + B·KV(T) fit the device memory (always true without a memory size)

    @property
    def seconds(self) -> float:
        """The step's time on the roof: the slower of compute and memory."""
        return max(self.compute_s, self.memory_s)

    @property
    def tpot(self) -> float:
        """Time per output token, seconds: each request gets one token per step."""
        return self.seconds

    @property
    def throughput(self) -> float:
        """Tokens per second over the whole batch: B / step time."""
        return self.B / self.seconds

    @property
    def compute_bound(self) -> bool:
        """FLOPs / peak >= bytes / bandwidth (at the ridge counts as compute-bound)."""
        return self.compute_s >= self.memory_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "seconds": self.seconds,
            "tpot_s": self.tpot,
            "throughput_tok_s": self.throughput,
            "compute_bound": self.compute_bound,
            "intensity": self.flops / self.bytes,
        }


def curve_point(
    shape: DecoderShape,
    B: int,
    T: int,
    E: int | float,
    peak_flops: float,
    bandwidth: float,
    memory_bytes: float | None = None,
) -> CurvePoint:
    """One decode step of B requests with T cached tokens each (``decoder_decode_step_cost``:
    weights once, every request's cache, activations) on the roof (peak_flops, bandwidth)."""
    peak, bw = _positive("peak_flops", peak_flops), _positive("bandwidth", bandwidth)
    cost = decoder_decode_step_cost(shape, B, T, E)
    fits = memory_bytes is None or B <= max_batch(shape, T, E, memory_bytes)
    return CurvePoint(
        B, T, float(cost.flops), float(cost.bytes), cost.flops / peak, cost.bytes / bw, fits
    )


@dataclass(frozen=True)
class Curve:
    """The predicted latency-throughput curve of one context length on one roof."""

    T: int
    points: tuple[CurvePoint, ...]  # by B, every one fitting the memory
    max_batch: int | None  # the memory stop (None without a memory size)
    compute_knee: int | None  # the first compute-bound B up to the stop, None if never
    half_throughput_knee: int | None  # the first B whose caches outweigh the weights read

    @property
    def stopped(self) -> bool:
        """Whether the memory stop cut the curve short of MAX_BATCH."""
        return self.max_batch is not None and self.max_batch < MAX_BATCH

    def to_dict(self) -> dict[str, Any]:
        return {
            "T": self.T,
            "max_batch": self.max_batch,
            "stopped_by_memory": self.stopped,
            "compute_knee": self.compute_knee,
            "half_throughput_knee": self.half_throughput_knee,
            "points": [p.to_dict() for p in self.points],
        }


def compute_knee(
    shape: DecoderShape,
    T: int,
    E: int | float,
    peak_flops: float,
    bandwidth: float,
    last: int = MAX_BATCH,
) -> int | None:
    """The least B in 1..last at which the step is compute-bound, None if none is.

    FLOPs and bytes are both affine in B with FLOPs(0) = 0, so FLOPs / bytes rises with B and
    once compute-bound the step stays so: a bisection finds the first such B.
    """
    if last < 1 or not curve_point(shape, last, T, E, peak_flops, bandwidth).compute_bound:
        return None
    lo, hi = 0, last  # not compute-bound at lo (or lo = 0), compute-bound at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if curve_point(shape, mid, T, E, peak_flops, bandwidth).compute_bound:
            hi = mid
        else:
            lo = mid
    return hi


def half_throughput_knee(shape: DecoderShape, T: int, E: int | float) -> int:
    """The least B with B·r >= w: step bytes are w + B·r (w the weights read, r one request's
    cache and activations), so here TPOT is twice w / bandwidth and a memory-bound step's
    throughput is half its ceiling bandwidth / r."""
    one = float(decoder_decode_step_cost(shape, 1, T, E).bytes)
    r = float(decoder_decode_step_cost(shape, 2, T, E).bytes) - one
    return max(1, math.ceil((one - r) / r))


def latency_curve(
    shape: DecoderShape,
    T: int,
    E: int | float,
    peak_flops: float,
    bandwidth: float,
    memory_bytes: float | None = None,
    batches: tuple[int, ...] = GRID,
) -> Curve:
    """The curve at context T: the points at `batches` (and at the knees and the memory stop
    among them) up to min(MAX_BATCH, the memory stop), the stop and the two knees."""
    stop = None if memory_bytes is None else max_batch(shape, T, E, memory_bytes)
    last = MAX_BATCH if stop is None else min(stop, MAX_BATCH)
    knee = compute_knee(shape, T, E, peak_flops, bandwidth, last)
    half = half_throughput_knee(shape, T, E)
    half_in = half if half <= last else None
    marks = {b for b in (knee, half_in) if b is not None}
    if stop is not None and 1 <= stop <= MAX_BATCH:
        marks.add(stop)
    top = max(batches, default=0)  # a shorter list of batch sizes shortens the curve too
    wanted = sorted({b for b in batches if 1 <= b <= last} | {b for b in marks if b <= top})
    points = tuple(curve_point(shape, B, T, E, peak_flops, bandwidth, memory_bytes) for B in wanted)
    return Curve(T, points, stop, knee, half_in)


def latency_curves(
    shape: DecoderShape,
    E: int | float,
    peak_flops: float,
    bandwidth: float,
    memory_bytes: float | None = None,
    contexts: tuple[int, ...] = CONTEXTS,
    batches: tuple[int, ...] = GRID,
) -> list[Curve]:
    """One ``latency_curve`` per context length."""
    return [
        latency_curve(shape, T, E, peak_flops, bandwidth, memory_bytes, batches) for T in contexts
    ]
