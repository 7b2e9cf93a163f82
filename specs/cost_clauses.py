"""Cost clauses: the FLOP and byte formulas of attnspec.specs.cost, proven against hand derivations,
the caches implementations allocate, and the FLOPs torch's FlopCounterMode counts.

The subject of these clauses is a cost model (the module attnspec.specs.cost, or a mutant namespace
with the same functions) wrapped in a ``CostSubject``; COST-KV-BYTES pairs it with an
implementation (whose caches it measures), COST-COUNTED with a FLOP counter an implementation
provides (``attnspec.implementations.discovery.flop_counter()``: torch's FlopCounterMode on the torch
implementation's decomposed matmul paths; the check itself is in ``attnspec.specs.cost_counted``).
"""

from __future__ import annotations

from fractions import Fraction
from itertools import pairwise
from typing import Any

import numpy as np
from hypothesis import strategies as st

from attnspec.specs.clauses import clause
from attnspec.specs.cost_counted import check_counted, mismatch
from attnspec.specs.dtypes import BYTES_PER_ELEMENT
from attnspec.specs.presets import ModelConfig
from attnspec.specs.runner import Target

# The scaling book's table, X(B×4096) @ W(4096×11008) with 2-byte elements.
TEXTBOOK_D, TEXTBOOK_F, TEXTBOOK_E = 4096, 11008, 2
TEXTBOOK_B1 = (90_177_536, 90_207_744, 0.99967)  # FLOPs, bytes, intensity at B = 1
TEXTBOOK_INTENSITY = {1: 1.0, 16: 15.9, 64: 62.7, 256: 235.8, 512: 437.0}
H100_PEAK, H100_BANDWIDTH, H100_RIDGE = 989e12, 3.35e12, 295.2

element_sizes = st.sampled_from([0.5, 1, 2, 4, 8])


class CostSubject:
    """A cost model, paired with an implementation (or counter) when a clause needs one.

    Attributes resolve on the model first, then (for the few names in PAIRED) on the
    paired object, so a clause's ``needs`` names functions of either and a missing one
    becomes a skip; the rest of the implementation stays hidden from other areas' clauses.
    """

    PAIRED = (
        "kv_cache",
        "asarray",
        "to_numpy",
        "counted_attention",
        "counted_matmul",
        "counted_decoder",
        "count_flops",
    )

    def __init__(self, model: Any, impl: Any = None) -> None:
        self.model = model
        self.impl = impl
        model_name = getattr(model, "name", None) or getattr(model, "__name__", "cost model")
        self.name = str(model_name) if impl is None else f"{model_name} + {impl.name}"
        self.dtypes = getattr(impl, "dtypes", None)

    def __getattr__(self, attr: str) -> Any:
        if attr in ("model", "impl"):
            raise AttributeError(attr)
        if hasattr(self.model, attr):
            return getattr(self.model, attr)
        if self.impl is not None and attr in self.PAIRED and hasattr(self.impl, attr):
            return getattr(self.impl, attr)
        raise AttributeError(f"{self.name} has no {attr!r}")


def exact(cost: Any) -> Fraction:
    """A cost's intensity as an exact fraction (E may be 0.5; floats convert exactly)."""
    return Fraction(cost.flops) / Fraction(cost.bytes)


@clause(
    "COST-MATMUL",
    "X(B×D) @ W(D×F) costs 2BDF FLOPs and E(BD+DF+BF) bytes; D=4096, F=11008, E=2 gives "
    "90,177,536 FLOPs, 90,207,744 bytes, intensity 0.99967 at B=1 and 1.0, 15.9, 62.7, "
    "235.8, 437.0 at B = 1, 16, 64, 256, 512",
    needs=("matmul_cost",),
)
def cost_matmul(t: Target, data: st.DataObject) -> None:
    c = t.impl.matmul_cost(1, TEXTBOOK_D, TEXTBOOK_F, TEXTBOOK_E)
    got = (c.flops, c.bytes, round(c.intensity, 5))
    if got != TEXTBOOK_B1:
        raise mismatch(
            t.where("matmul_cost(1, 4096, 11008, 2) (flops, bytes, intensity)"), got, TEXTBOOK_B1
        )
    for B, want in TEXTBOOK_INTENSITY.items():
        got_i = round(t.impl.matmul_cost(B, TEXTBOOK_D, TEXTBOOK_F, TEXTBOOK_E).intensity, 1)
        if got_i != want:
            raise mismatch(t.where(f"matmul_cost({B}, 4096, 11008, 2).intensity"), got_i, want)
    B = data.draw(st.integers(1, 4096), label="B")
    D = data.draw(st.integers(1, 16384), label="D")
    F = data.draw(st.integers(1, 16384), label="F")
    E = data.draw(element_sizes, label="E")
    c = t.impl.matmul_cost(B, D, F, E)
    formula = (2 * B * D * F, E * (B * D + D * F + B * F))
    if (c.flops, c.bytes) != formula:
        raise mismatch(
            t.where(f"matmul_cost({B}, {D}, {F}, {E}) (flops, bytes)"), (c.flops, c.bytes), formula
        )


@clause(
    "COST-MATMUL-LIMITS",
    "matmul intensity rises strictly with B, stays below its limit 2DF/E(D+F), is within "
    "B·(B/D + B/F) of B when E=2, and is symmetric in D and F",
    needs=("matmul_cost",),
)
def cost_matmul_limits(t: Target, data: st.DataObject) -> None:
    D = data.draw(st.integers(1, 1 << 15), label="D")
    F = data.draw(st.integers(1, 1 << 15), label="F")
    E = data.draw(element_sizes, label="E")
    B1 = data.draw(st.integers(1, 1 << 16), label="B")
    B2 = B1 + data.draw(st.integers(1, 1 << 16), label="batch increase")
    low, high = t.impl.matmul_cost(B1, D, F, E), t.impl.matmul_cost(B2, D, F, E)
    if not exact(low) < exact(high):
        raise mismatch(
            t.where(f"matmul_cost intensity for D={D}, F={F}, E={E}: B={B1} -> {B2}"),
            (low.intensity, high.intensity),
            "strictly increasing",
        )
    limit = Fraction(2 * D * F) / (Fraction(E) * (D + F))
    if not exact(high) < limit:
        raise mismatch(
            t.where(f"matmul_cost({B2}, {D}, {F}, {E}).intensity"),
            high.intensity,
            f"< limit {float(limit):.6g}",
        )
    small = data.draw(st.integers(1, max(1, min(D, F) // 64)), label="small B")
    near = exact(t.impl.matmul_cost(small, D, F, 2))
    slack = Fraction(small) * (Fraction(small, D) + Fraction(small, F))
    if not (small - slack <= near <= small):
        raise mismatch(
            t.where(f"matmul_cost({small}, {D}, {F}, 2).intensity"),
            float(near),
            f"within {float(slack):.3g} below B={small}",
        )
    swapped = t.impl.matmul_cost(B1, F, D, E)
    if (low.flops, low.bytes) != (swapped.flops, swapped.bytes):
        raise mismatch(
            t.where(f"matmul_cost({B1}, {D}, {F}, {E}) vs matmul_cost({B1}, {F}, {D}, {E})"),
            (low.flops, low.bytes),
            (swapped.flops, swapped.bytes),
        )


@clause(
    "COST-DECODE-ATTN",
    "a decode step reads the whole cache once: 4·B·Hq·T·D FLOPs, E·B·(2·Hkv·T·D + 2·Hq·D) bytes, "
    "intensity about (Hq/Hkv)·2/E, independent of batch and nearly of context; batching "
    "raises matmul intensity but never decode-attention intensity",
    needs=("decode_attention_cost", "matmul_cost"),
)
def cost_decode_attn(t: Target, data: st.DataObject) -> None:
    B = data.draw(st.integers(1, 256), label="B")
    Hkv = data.draw(st.integers(1, 16), label="Hkv")
    G = data.draw(st.integers(1, 16), label="query heads per kv head")
    T = data.draw(st.integers(1, 1 << 17), label="T")
    D = data.draw(st.integers(1, 256), label="D")
    E = data.draw(element_sizes, label="E")
    Hq = G * Hkv
    call = f"decode_attention_cost({B}, {Hq}, {Hkv}, {T}, {D}, {E})"
    c = t.impl.decode_attention_cost(B, Hq, Hkv, T, D, E)
    want = (4 * B * Hq * T * D, E * B * (2 * Hkv * T * D + 2 * Hq * D))
    if (c.flops, c.bytes) != want:
        raise mismatch(t.where(f"{call} (flops, bytes)"), (c.flops, c.bytes), want)
    rule = Fraction(2 * G) / Fraction(E)
    if not rule * (1 - Fraction(G, T)) <= exact(c) <= rule:
        raise mismatch(
            t.where(f"{call}.intensity"),
            c.intensity,
            f"(Hq/Hkv)·2/E = {float(rule):.6g} within a factor 1 - Hq/(Hkv·T)",
        )
    more = B + data.draw(st.integers(1, 256), label="batch increase")
    batched = t.impl.decode_attention_cost(more, Hq, Hkv, T, D, E)
    if exact(batched) != exact(c):
        raise mismatch(
            t.where(f"decode intensity at B={more} vs B={B}"), batched.intensity, c.intensity
        )
    m_low, m_high = t.impl.matmul_cost(B, 4096, 4096, E), t.impl.matmul_cost(more, 4096, 4096, E)
    if not exact(m_high) > exact(m_low):
        raise mismatch(
            t.where(f"matmul intensity at B={more} vs B={B}"),
            m_high.intensity,
            f"> {m_low.intensity}",
        )


@clause(
    "COST-KV-BYTES",
    "kv_cache_bytes is 2 × layers × Hkv × D × T × B × E, and equals the nbytes of the cache "
    "an implementation allocates for max_len = T tokens",
    needs=("kv_cache_bytes", "kv_cache"),
)
def cost_kv_bytes(t: Target, data: st.DataObject) -> None:
    layers = data.draw(st.integers(1, 96), label="layers")
    B = data.draw(st.integers(1, 8), label="B")
    Hkv = data.draw(st.integers(1, 8), label="Hkv")
    D = data.draw(st.integers(1, 32), label="D")
    T = data.draw(st.integers(1, 64), label="T")
    E = BYTES_PER_ELEMENT[t.dtype]
    got = t.impl.kv_cache_bytes(layers, B, Hkv, D, T, E)
    want = 2 * layers * Hkv * D * T * B * E
    if got != want:
        raise mismatch(t.where(f"kv_cache_bytes({layers}, {B}, {Hkv}, {D}, {T}, {E})"), got, want)
    cache = t.guard(
        f"kv_cache({B}, {Hkv}, {D}, {T}, {t.dtype!r})", t.impl.kv_cache, B, Hkv, D, T, t.dtype
    )
    nbytes = t.guard("cache.nbytes", getattr, cache, "nbytes")
    model = t.impl.kv_cache_bytes(1, B, Hkv, D, T, E)
    if nbytes != model:
        raise mismatch(
            t.where(
                f"kv_cache({B}, {Hkv}, {D}, {T}, {t.dtype!r}).nbytes vs "
                f"kv_cache_bytes(1, {B}, {Hkv}, {D}, {T}, {E})"
            ),
            nbytes,
            model,
        )


@clause(
    "COST-COUNTED",
    "analytic FLOPs equal what FlopCounterMode counts on the torch implementation's matmul "
    "paths (causal: row by row over the visible keys), and analytic bytes equal the sizes of "
    "the op's input and output tensors, for matmul, attention and the decoder",
    needs=(
        "matmul_cost",
        "attention_cost",
        "decoder_prefill_cost",
        "decoder_decode_step_cost",
        "counted_attention",
        "counted_matmul",
        "counted_decoder",
        "count_flops",
    ),
    examples=0.5,
)
def cost_counted(t: Target, data: st.DataObject) -> None:
    check_counted(t, data)


@clause(
    "COST-RIDGE",
    "an op is memory-bound iff its intensity < peak FLOP/s ÷ bandwidth; H100 SXM (989e12, "
    "3.35e12) has ridge 295.2, so matmul B=256 is memory-bound and B=512 compute-bound",
    needs=("ridge", "is_memory_bound", "attainable_flops", "matmul_cost"),
)
def cost_ridge(t: Target, data: st.DataObject) -> None:
    got = round(t.impl.ridge(H100_PEAK, H100_BANDWIDTH), 1)
    if got != H100_RIDGE:
        raise mismatch(t.where("ridge(989e12, 3.35e12)"), got, H100_RIDGE)
    for B, bound in ((256, True), (512, False)):
        intensity = t.impl.matmul_cost(B, TEXTBOOK_D, TEXTBOOK_F, TEXTBOOK_E).intensity
        if t.impl.is_memory_bound(intensity, H100_PEAK, H100_BANDWIDTH) is not bound:
            raise mismatch(t.where(f"is_memory_bound(matmul B={B}, H100 SXM)"), not bound, bound)
        roof = t.impl.attainable_flops(intensity, H100_PEAK, H100_BANDWIDTH)
        want = intensity * H100_BANDWIDTH if bound else H100_PEAK
        if roof != want:
            raise mismatch(t.where(f"attainable_flops(matmul B={B}, H100 SXM)"), roof, want)
    peak = data.draw(st.floats(1e9, 1e16), label="peak FLOP/s")
    bandwidth = data.draw(st.floats(1e9, 1e13), label="bandwidth")
    ridge = t.impl.ridge(peak, bandwidth)
    if ridge != peak / bandwidth:
        raise mismatch(t.where(f"ridge({peak!r}, {bandwidth!r})"), ridge, peak / bandwidth)
    below = float(np.nextafter(ridge, 0.0))
    intensity = data.draw(st.floats(0.0, 1e6), label="intensity")
    for i in (intensity, ridge, below):
        got_b = t.impl.is_memory_bound(i, peak, bandwidth)
        if got_b is not (i < ridge):
            raise mismatch(
                t.where(f"is_memory_bound({i!r}, {peak!r}, {bandwidth!r})"), got_b, i < ridge
            )
        roof = t.impl.attainable_flops(i, peak, bandwidth)
        if roof != min(peak, i * bandwidth):
            raise mismatch(
                t.where(f"attainable_flops({i!r}, {peak!r}, {bandwidth!r})"),
                roof,
                min(peak, i * bandwidth),
            )


KIB, MIB = 1 << 10, 1 << 20


@clause(
    "COST-HIERARCHY",
    "main-memory traffic lies between the compulsory bytes and compulsory + re-reads, and "
    "re-reads stay in a cache iff the per-(batch, kv-head) working set fits: tiled 128×128 "
    "attention at B=1 H=8 T=2048 D=64 bf16 re-reads a 512 KB K/V slice, so a 50 MB L2 serves "
    "them (main memory sees the compulsory 8 MB; on H100 it is compute-bound, like SDPA) and "
    "a 256 KB cache does not; one query block moves exactly the compulsory bytes",
    needs=(
        "tiled_attention_traffic",
        "attention_traffic",
        "attention_cost",
        "tiled_attention_cost",
        "level_bytes",
        "hierarchical_verdict",
    ),
)
def cost_hierarchy(t: Target, data: st.DataObject) -> None:
    hand = t.impl.tiled_attention_traffic(1, 8, 8, 2048, 2048, 64, 64, 2, True, 128, 128)
    call = "tiled_attention_traffic(1, 8, 8, 2048, 2048, 64, 64, 2, True, 128, 128)"
    got = (hand.compulsory, hand.working_set)
    if got != (8 * MIB, 512 * KIB):
        raise mismatch(t.where(f"{call} (compulsory, working_set)"), got, (8 * MIB, 512 * KIB))
    for cache, want in ((50 * MIB, hand.compulsory), (256 * KIB, hand.total)):
        dram = t.impl.level_bytes(hand, cache)[0]
        if dram != want:
            raise mismatch(t.where(f"level_bytes({call}, {cache}) main memory"), dram, want)
    sdpa = t.impl.attention_traffic(1, 8, 8, 2048, 2048, 64, 64, 2, True)
    verdicts = [
        t.impl.hierarchical_verdict(x, H100_PEAK, H100_BANDWIDTH, None, 50 * MIB)
        for x in (hand, sdpa)
    ]
    if verdicts != ["compute-bound", "compute-bound"]:
        raise mismatch(t.where("H100 verdicts (tiled, SDPA) at T=2048"), verdicts, "compute-bound")
    G = data.draw(st.integers(1, 4), label="query heads per kv head")
    Hkv = data.draw(st.integers(1, 4), label="Hkv")
    Tq = data.draw(st.integers(1, 300), label="Tq")
    Tk = Tq + data.draw(st.integers(0, 300), label="Tk - Tq")
    D, Dv = (data.draw(st.integers(1, 128), label=x) for x in ("D", "Dv"))
    bq, bk = (data.draw(st.integers(1, 256), label=x) for x in ("block_q", "block_k"))
    E = data.draw(element_sizes, label="E")
    causal = data.draw(st.booleans(), label="causal")
    cache = data.draw(st.integers(1, 1 << 22), label="cache bytes")
    args = (2, G * Hkv, Hkv, Tq, Tk, D, Dv, E, causal)
    call = f"tiled_attention_traffic{(*args, bq, bk)}"
    tr = t.impl.tiled_attention_traffic(*args, bq, bk)
    plain = t.impl.attention_cost(*args).bytes
    flat = t.impl.tiled_attention_cost(*args, bq, bk).bytes
    if (tr.compulsory, tr.total) != (plain, flat):
        raise mismatch(
            t.where(f"{call} (compulsory, total)"), (tr.compulsory, tr.total), (plain, flat)
        )
    dram = t.impl.level_bytes(tr, cache)[0]
    if not tr.compulsory <= dram <= tr.compulsory + tr.rereads:
        raise mismatch(t.where(f"level_bytes({call}, {cache})"), dram, "compulsory..total")
    want = tr.compulsory if tr.working_set <= cache else tr.total
    if dram != want:
        raise mismatch(t.where(f"level_bytes({call}, {cache}) working-set rule"), dram, want)
    one = t.impl.tiled_attention_traffic(*args, Tq, bk)
    if (one.rereads, t.impl.level_bytes(one, 1)[0]) != (0, plain):
        raise mismatch(
            t.where(f"tiled_attention_traffic{(*args, Tq, bk)} (one query block)"),
            (one.rereads, t.impl.level_bytes(one, 1)[0]),
            (0, plain),
        )


# Llama-3-8B in bf16 on the H100 SXM (80 GB): the hand derivation of docs/roofline.md,
# section "Latency vs throughput".
LLAMA3_8B: dict[str, Any] = {"layers": 32, "d_model": 4096, "n_heads": 32, "n_kv_heads": 8, "head_dim": 128,
             "d_ff": 14336, "vocab": 128256}  # fmt: skip
H100_MEMORY = 80e9  # bytes: the datasheet's "80GB"
CURVE_T = 4096
CURVE_B1 = (17_157_324_800, 15_547_656_704, 4.641, 215.5)  # FLOPs, bytes, TPOT ms, tok/s
CURVE_KNEE = (28, 8.976, 3119.5)  # half-throughput knee: B, TPOT ms, tok/s
CURVE_STOP = (119, 23.585, 5045.6)  # memory stop: B, TPOT ms, tok/s
SHORT_T, SHORT_COMPUTE_KNEE = 128, 450  # a short context does turn compute-bound, at B = 450


def _curve_figures(p: Any) -> tuple[int, float, float]:
    return (p.B, round(p.tpot * 1e3, 3), round(p.throughput, 1))


@st.composite
def small_decoders(draw: st.DrawFn) -> ModelConfig:
    """A Llama-style shape small enough for any draw (GQA groups, tied or not)."""
    hkv = draw(st.integers(1, 8), label="Hkv")
    return ModelConfig(
        "drawn",
        layers=draw(st.integers(1, 48), label="layers"),
        d_model=draw(st.integers(1, 8192), label="d_model"),
        n_heads=hkv * draw(st.integers(1, 8), label="query heads per kv head"),
        n_kv_heads=hkv,
        head_dim=draw(st.sampled_from([64, 80, 96, 128, 256]), label="head_dim"),
        d_ff=draw(st.integers(1, 32768), label="d_ff"),
        vocab=draw(st.integers(1, 1 << 18), label="vocab"),
        tied_embeddings=draw(st.booleans(), label="tied"),
    )


@clause(
    "COST-LATENCY-CURVE",
    "a decode step of B requests at context T costs decoder_decode_step_cost (weights once, "
    "every request's cache) and takes max(FLOPs/peak, bytes/bandwidth): TPOT is that time and "
    "throughput B over it, rising with B up to the memory stop (weights + B·KV(T) fit) and "
    "compute-bound from the compute knee on; Llama-3-8B bf16 on an 80 GB H100 at T=4096 gives "
    "4.641 ms and 215.5 tok/s at B=1, the half-throughput knee at B=28 (8.976 ms, 3119.5 "
    "tok/s), the memory stop at B=119 and no compute knee (at T=128 it is B=450)",
    needs=("curve_point", "max_batch", "latency_curve"),
)
def cost_latency_curve(t: Target, data: st.DataObject) -> None:
    from attnspec.specs.cost import decoder_decode_step_cost, kv_cache_bytes

    m, llama = t.impl, ModelConfig("Llama-3-8B", **LLAMA3_8B)
    h100 = (H100_PEAK, H100_BANDWIDTH)
    one = m.curve_point(llama, 1, CURVE_T, 2, *h100)
    got = (one.flops, one.bytes, round(one.tpot * 1e3, 3), round(one.throughput, 1))
    if got != CURVE_B1:
        raise mismatch(
            t.where("Llama-3-8B T=4096 B=1 (flops, bytes, TPOT ms, tok/s)"), got, CURVE_B1
        )
    curve = m.latency_curve(llama, CURVE_T, 2, *h100, H100_MEMORY)
    by_b = {p.B: p for p in curve.points}
    marks = (curve.max_batch, curve.half_throughput_knee, curve.compute_knee)
    if marks != (CURVE_STOP[0], CURVE_KNEE[0], None) or max(by_b) != CURVE_STOP[0]:
        raise mismatch(
            t.where("Llama-3-8B T=4096 on H100 (memory stop, half knee, compute knee, last B)"),
            (*marks, max(by_b)),
            (CURVE_STOP[0], CURVE_KNEE[0], None, CURVE_STOP[0]),
        )
    for want in (CURVE_KNEE, CURVE_STOP):
        figures = _curve_figures(by_b[want[0]])
        if figures != want:
            raise mismatch(t.where("Llama-3-8B T=4096 (B, TPOT ms, tok/s)"), figures, want)
    short = m.latency_curve(llama, SHORT_T, 2, *h100, H100_MEMORY).compute_knee
    if short != SHORT_COMPUTE_KNEE:
        raise mismatch(t.where("Llama-3-8B T=128 compute knee on H100"), short, SHORT_COMPUTE_KNEE)

    shape = data.draw(small_decoders(), label="shape")
    T = data.draw(st.integers(1, 1 << 16), label="T")
    E = data.draw(st.sampled_from([1, 2, 4]), label="E")
    peak = data.draw(st.floats(1e9, 1e16), label="peak FLOP/s")
    bw = data.draw(st.floats(1e9, 1e13), label="bandwidth")
    B = data.draw(st.integers(1, 1024), label="B")
    where = f"curve_point({shape!r}, B={B}, T={T}, E={E}, {peak!r}, {bw!r})"
    p = m.curve_point(shape, B, T, E, peak, bw)
    step = decoder_decode_step_cost(shape, B, T, E)
    if (p.flops, p.bytes) != (step.flops, step.bytes):
        raise mismatch(
            t.where(f"{where} (flops, bytes)"), (p.flops, p.bytes), (step.flops, step.bytes)
        )
    more = m.curve_point(shape, B + 1, T, E, peak, bw)
    cache = kv_cache_bytes(shape.layers, 1, shape.n_kv_heads, shape.head_dim, T, E)
    if not more.bytes - p.bytes > cache:
        raise mismatch(
            t.where(f"{where}: bytes added by request B+1"),
            more.bytes - p.bytes,
            f"> its cache {cache}",
        )
    seconds = max(step.flops / peak, step.bytes / bw)
    if (p.tpot, p.throughput) != (seconds, B / seconds):
        raise mismatch(
            t.where(f"{where} (TPOT, throughput)"), (p.tpot, p.throughput), (seconds, B / seconds)
        )

    d, q, kv = shape.d_model, shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim
    params = shape.vocab * d * (1 if shape.tied_embeddings else 2) + d
    params += shape.layers * (2 * d + 2 * d * q + 2 * d * kv + 3 * d * shape.d_ff)
    weights = E * params
    memory = weights + data.draw(st.integers(0, 2048 * int(cache)), label="bytes for caches")
    stop = m.max_batch(shape, T, E, memory)
    if not (weights + stop * cache <= memory < weights + (stop + 1) * cache):
        raise mismatch(
            t.where(f"max_batch({shape!r}, {T}, {E}, {memory!r})"), stop, "the most caches that fit"
        )
    curve = m.latency_curve(shape, T, E, peak, bw, memory)
    bs = [p.B for p in curve.points]
    last = min(stop, 1024)
    if curve.max_batch != stop or (bs and (max(bs) != last or min(bs) < 1)) or (not bs and last):
        raise mismatch(
            t.where(f"latency_curve(T={T}) batch sizes with memory stop {stop}"), bs, f"1 .. {last}"
        )
    tpots, rates = [p.tpot for p in curve.points], [p.throughput for p in curve.points]
    # compute-bound throughput is peak / FLOPs per token for every B: equal up to rounding
    flat = all(b >= a * (1 - 1e-12) for a, b in pairwise(rates))
    if tpots != sorted(tpots) or not flat:
        raise mismatch(
            t.where(f"latency_curve(T={T}) TPOT and throughput by B"), (tpots, rates), "rising"
        )
    knee = curve.compute_knee
    bound = [p.B for p in curve.points if p.compute_s >= p.memory_s]
    before = knee is not None and knee > 1 and m.curve_point(shape, knee - 1, T, E, peak, bw)
    if (
        (knee is None and bound)
        or (knee is not None and bound != [b for b in bs if b >= knee])
        or (before and before.compute_s >= before.memory_s)
    ):
        raise mismatch(
            t.where(f"latency_curve(T={T}) compute knee"),
            knee,
            f"the first compute-bound B ({bound[:1]})",
        )
