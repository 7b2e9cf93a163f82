"""Cost clauses: the FLOP and byte formulas of specs.cost, proven against hand derivations,
the caches implementations allocate, and the FLOPs torch's FlopCounterMode counts.

The subject of these clauses is a cost model (the module specs.cost, or a mutant namespace
with the same functions) wrapped in a ``CostSubject``; COST-KV-BYTES pairs it with an
implementation (whose caches it measures), COST-COUNTED with a FLOP counter an implementation
provides (``implementations.discovery.flop_counter()``: torch's FlopCounterMode on the torch
implementation's decomposed matmul paths; the check itself is in ``specs.cost_counted``).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
from hypothesis import strategies as st

from specs.clauses import clause
from specs.cost_counted import check_counted, mismatch
from specs.dtypes import BYTES_PER_ELEMENT
from specs.runner import Target

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
