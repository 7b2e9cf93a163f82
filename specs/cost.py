"""Analytic FLOP and byte counts for every op attnspec benchmarks, and the roofline.

Conventions (shared by every function here):

- A multiply-add is 2 FLOPs, so an (M×K)@(K×N) product is 2MKN FLOPs. Only these
  matmul-shaped FLOPs are counted: softmax, scaling, masking, feature maps, norms and
  activations are O(elements), not O(elements × D), and ``FlopCounterMode`` counts
  matmuls only, so both sides of COST-COUNTED agree by construction.
- Bytes are the *minimal* traffic to main memory: every input read once and every
  output written once, plus re-reads the algorithm requires (K/V once per query block
  in tiled attention). Intermediates that a fused kernel keeps on chip are free.
- E is bytes per element (2 for bf16/fp16, 4 for float32, 0.5 for int4); it is never
  bits. Shapes are positive ints; invalid input raises ValueError naming the argument.

Sources: the matmul table and the ridge follow the scaling book ("How to Scale Your
Model", Austin et al., 2025, ch. "All About Rooflines"); attention FLOPs and the tiled
K/V re-read follow FlashAttention (Dao et al., 2022, sec. 3.2, Thm. 2); the roofline
itself is Williams, Waterman and Patterson, CACM 2009.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Cost:
    """FLOPs and bytes moved by one call of an op."""

    flops: int | float
    bytes: int | float

    def __post_init__(self) -> None:
        if not (self.flops >= 0 and math.isfinite(self.flops)):
            raise ValueError(f"Cost.flops must be finite and >= 0, got {self.flops!r}")
        if not (self.bytes > 0 and math.isfinite(self.bytes)):
            raise ValueError(f"Cost.bytes must be finite and > 0, got {self.bytes!r}")

    @property
    def intensity(self) -> float:
        """Arithmetic intensity in FLOP/byte."""
        return self.flops / self.bytes

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.bytes + other.bytes)

    def times(self, n: int) -> Cost:
        """The cost of running the op ``n`` times (e.g. once per layer)."""
        n = _positive_int("n", n)
        return Cost(self.flops * n, self.bytes * n)


class DecoderShape(Protocol):
    """The dimensions of a Llama-style decoder (any config object with these fields, frozen
    dataclasses included: the members are read-only)."""

    @property
    def layers(self) -> int: ...
    @property
    def d_model(self) -> int: ...
    @property
    def n_heads(self) -> int: ...
    @property
    def n_kv_heads(self) -> int: ...
    @property
    def head_dim(self) -> int: ...
    @property
    def d_ff(self) -> int: ...
    @property
    def vocab(self) -> int: ...


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    try:
        n = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must be a positive int, got {value!r}") from None
    if n <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return n


def _element_size(name: str, value: object) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} (bytes per element) must be a number, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} (bytes per element) must be finite and > 0, got {value!r}")
    return value


def _heads(Hq: object, Hkv: object) -> tuple[int, int]:
    hq, hkv = _positive_int("Hq", Hq), _positive_int("Hkv", Hkv)
    if hq % hkv:
        raise ValueError(f"Hq must be a multiple of Hkv, got Hq={hq}, Hkv={hkv}")
    return hq, hkv


def matmul_cost(B: int, D: int, F: int, E: int | float) -> Cost:
    """X(B×D) @ W(D×F): 2BDF FLOPs and E(BD + DF + BF) bytes.

    Each of the B·F outputs is a length-D dot product (D multiplies, D adds); X and W
    are read once and Y written once. Intensity 2BDF / E(BD+DF+BF) is about B when
    B ≪ D, F (E = 2) and tends to 2DF / E(D+F) as B → ∞ (scaling book, "All About
    Rooflines": D=4096, F=11008, E=2 gives 0.99967 at B=1 and 437.0 at B=512).
    """
    B, D, F = _positive_int("B", B), _positive_int("D", D), _positive_int("F", F)
    E = _element_size("E", E)
    return Cost(2 * B * D * F, E * (B * D + D * F + B * F))


def visible_pairs(Tq: int, Tk: int, causal: bool) -> int:
    """Number of (query i, key j) pairs a mask lets through, bottom-right aligned.

    Query i sees key j iff j <= i + (Tk - Tq), so row i sees max(0, i + Tk - Tq + 1)
    keys. Summing: Tq·Tk - Tq(Tq-1)/2 when Tq <= Tk, and Tk(Tk+1)/2 when Tq > Tk
    (the first Tq - Tk rows see nothing). Tq = Tk = T gives T(T+1)/2.
    """
    Tq, Tk = _positive_int("Tq", Tq), _positive_int("Tk", Tk)
    if not causal:
        return Tq * Tk
    if Tq <= Tk:
        return Tq * Tk - Tq * (Tq - 1) // 2
    return Tk * (Tk + 1) // 2


def attention_cost(
    B: int,
    Hq: int,
    Hkv: int,
    Tq: int,
    Tk: int,
    D: int,
    Dv: int,
    E: int | float,
    causal: bool,
) -> Cost:
    """softmax(Q Kᵀ · scale) V for q (B, Hq, Tq, D), k (B, Hkv, Tk, D), v (B, Hkv, Tk, Dv).

    FLOPs: each visible pair costs 2D for its score and 2Dv for its share of the
    output, so 2·B·Hq·pairs·(D + Dv); non-causal pairs = Tq·Tk gives FlashAttention's
    4·B·H·T²·D, causal pairs are counted exactly (``visible_pairs``), not halved.
    Bytes: Q read, K and V read (with Hkv heads: GQA stores each kv head once, the bug
    LLM-Viewer shipped was counting them with Hq), O written: E·B·(Hq·Tq·D +
    Hkv·Tk·(D + Dv) + Hq·Tq·Dv). The mask changes no traffic: the last query row sees
    every key. Non-causal MHA with Tq = Tk = T, D = Dv, E = 2 has intensity T/2 (scaling
    book, "All About Transformers").
    """
    B = _positive_int("B", B)
    Hq, Hkv = _heads(Hq, Hkv)
    Tq, Tk = _positive_int("Tq", Tq), _positive_int("Tk", Tk)
    D, Dv = _positive_int("D", D), _positive_int("Dv", Dv)
    E = _element_size("E", E)
    pairs = visible_pairs(Tq, Tk, causal)
    flops = 2 * B * Hq * pairs * (D + Dv)
    elements = B * (Hq * Tq * D + Hkv * Tk * (D + Dv) + Hq * Tq * Dv)
    return Cost(flops, E * elements)


def decode_attention_cost(B: int, Hq: int, Hkv: int, T: int, D: int, E: int | float) -> Cost:
    """One query token per sequence attending to a cache of T tokens (D = Dv).

    ``attention_cost`` with Tq = 1, Tk = T: FLOPs 4·B·Hq·T·D; bytes E·B·(2·Hkv·T·D +
    2·Hq·D): the whole cache is read once per step. Intensity = (Hq/Hkv)·(2/E) /
    (1 + Hq/(Hkv·T)): B cancels exactly and T only through a term that vanishes as
    T grows, so batching amortises weights, never the cache (scaling book,
    "All About Transformers", KV-cache section).
    """
    return attention_cost(B, Hq, Hkv, 1, T, D, D, E, causal=True)


def kv_cache_bytes(layers: int, B: int, Hkv: int, D: int, T: int, E: int | float) -> int | float:
    """2 (K and V) × layers × Hkv × D × T × B × E bytes (scaling book, KV-cache section)."""
    layers, B = _positive_int("layers", layers), _positive_int("B", B)
    Hkv, D, T = _positive_int("Hkv", Hkv), _positive_int("D", D), _positive_int("T", T)
    E = _element_size("E", E)
    return 2 * layers * Hkv * D * T * B * E


def quantized_kv_bytes(
    layers: int,
    B: int,
    Hkv: int,
    D: int,
    T: int,
    E: int | float,
    *,
    scales: int = 1,
    scale_bytes: int | float = 4,
) -> int | float:
    """An 8-bit (or other E) cache: ``kv_cache_bytes`` at E plus its float32 scales, one per
    tensor (scales = 1) or per KV head (scales = Hkv), for K and V in every layer (vLLM's
    k_scale / v_scale per attention layer)."""
    return kv_cache_bytes(layers, B, Hkv, D, T, E) + 2 * layers * scales * scale_bytes


def quantized_decode_cost(
    B: int,
    Hq: int,
    Hkv: int,
    T: int,
    D: int,
    E_kv: int | float,
    E: int | float,
    *,
    scales: int = 1,
    scale_bytes: int | float = 4,
) -> Cost:
    """``decode_attention_cost`` over a cache stored at E_kv bytes per element (q and o at E),
    plus the K and V scales read once per step: FLOPs 4·B·Hq·T·D; bytes B·(2·Hkv·T·D·E_kv +
    2·Hq·D·E) + 2·scales·scale_bytes. Halving E_kv nearly doubles the intensity."""
    base = decode_attention_cost(B, Hq, Hkv, T, D, E)
    cache = B * 2 * Hkv * T * D * _element_size("E_kv", E_kv)
    return Cost(base.flops, cache + B * 2 * Hq * D * E + 2 * scales * scale_bytes)


def kv_append_cost(layers: int, B: int, Hkv: int, D: int, T_new: int, E: int | float) -> Cost:
    """Writing T_new tokens of K and V into a preallocated cache: no FLOPs.

    The new K and V are read once and written once into their slots:
    2 × ``kv_cache_bytes(..., T_new, ...)``. Returning views of the filled prefix moves
    nothing; a cache that copies its whole contents on append moves far more.
    """
    return Cost(0, 2 * kv_cache_bytes(layers, B, Hkv, D, T_new, E))


def tiled_attention_cost(
    B: int,
    Hq: int,
    Hkv: int,
    Tq: int,
    Tk: int,
    D: int,
    Dv: int,
    E: int | float,
    causal: bool,
    block_q: int,
    block_k: int,
) -> Cost:
    """FlashAttention forward with block sizes (block_q, block_k) (Dao et al., 2022).

    FLOPs are the useful FLOPs of ``attention_cost`` so tiled and plain runs compare
    on one scale. Bytes: Q read and O written once; K and V re-read once per query
    block (FlashAttention Thm. 2: Θ(Tq·Tk·D/M) traffic for SRAM size M). Query heads
    sharing a kv head share its reads, so the re-reads count Hkv heads; per query
    block only the key blocks holding a visible key are read (causal: the block's last
    row sees min(Tk, q1 + Tk - Tq) keys, rounded up to whole key blocks). One query
    block covering Tq gives exactly ``attention_cost``'s bytes.
    """
    B = _positive_int("B", B)
    Hq, Hkv = _heads(Hq, Hkv)
    Tq, Tk = _positive_int("Tq", Tq), _positive_int("Tk", Tk)
    D, Dv = _positive_int("D", D), _positive_int("Dv", Dv)
    bq, bk = _positive_int("block_q", block_q), _positive_int("block_k", block_k)
    E = _element_size("E", E)
    keys_read = 0
    for q1 in range(bq, Tq + bq, bq):
        visible = Tk if not causal else max(0, min(Tk, min(q1, Tq) + Tk - Tq))
        keys_read += min(Tk, -(-visible // bk) * bk)
    flops = attention_cost(B, Hq, Hkv, Tq, Tk, D, Dv, E, causal).flops
    elements = B * (Hq * Tq * (D + Dv) + Hkv * keys_read * (D + Dv))
    return Cost(flops, E * elements)


def linear_attention_recurrent_step_cost(
    B: int, H: int, D: int, Dv: int, E: int | float, E_state: int | float | None = None
) -> Cost:
    """One token of causal linear attention carrying state S (D×Dv) and z (D).

    S += φ(k)vᵀ, z += φ(k), y = φ(q)ᵀS / (φ(q)ᵀz + eps) (Katharopoulos et al., 2020,
    eq. 18-20). z is S's column for a value of constant 1, so with Dv' = Dv + 1 the
    update and the readout cost 2·D·Dv' FLOPs each: 4·B·H·D·(Dv + 1). Bytes: q, k, v
    read and y written (E), and the state read and written back (E_state, default E).
    Intensity about 2/E_state: the recurrent step is memory-bound on every device.
    """
    B, H = _positive_int("B", B), _positive_int("H", H)
    D, Dv = _positive_int("D", D), _positive_int("Dv", Dv)
    E = _element_size("E", E)
    Es = E if E_state is None else _element_size("E_state", E_state)
    flops = 4 * B * H * D * (Dv + 1)
    io = E * B * H * (2 * D + 2 * Dv)
    state = Es * B * H * 2 * D * (Dv + 1)
    return Cost(flops, io + state)


def linear_attention_chunked_cost(
    B: int,
    H: int,
    T: int,
    D: int,
    Dv: int,
    chunk: int,
    E: int | float,
    E_state: int | float | None = None,
    initial_state: bool = False,
) -> Cost:
    """Chunked causal linear attention over T tokens (chunk size c; the last may be short).

    Per chunk of c tokens, with Dv' = Dv + 1 (z as a ones column, as in the recurrent
    step): intra-chunk masked scores φ(Q)φ(K)ᵀ computed densely, 2c²D, times V', 2c²Dv';
    inter-chunk readout φ(Q)S', 2cDDv'; state update S' += φ(K)ᵀV', 2cDDv' (Yang et
    al., "Gated Linear Attention", 2024, sec. 3). Bytes: q, k, v read and o written once
    (E), the final state written (E_state) and the initial one read when given.
    """
    B, H, T = _positive_int("B", B), _positive_int("H", H), _positive_int("T", T)
    D, Dv = _positive_int("D", D), _positive_int("Dv", Dv)
    C = _positive_int("chunk", chunk)
    E = _element_size("E", E)
    Es = E if E_state is None else _element_size("E_state", E_state)
    full, rest = divmod(T, C)
    sizes = [C] * full + ([rest] if rest else [])
    Dv1 = Dv + 1
    per_bh = sum(2 * c * c * D + 2 * c * c * Dv1 + 4 * c * D * Dv1 for c in sizes)
    io = E * B * H * T * (2 * D + 2 * Dv)
    state = Es * B * H * D * Dv1 * (2 if initial_state else 1)
    return Cost(B * H * per_bh, io + state)


def _check_decoder(shape: DecoderShape) -> None:
    for field in ("layers", "d_model", "n_heads", "n_kv_heads", "head_dim", "d_ff", "vocab"):
        if not hasattr(shape, field):
            raise ValueError(f"decoder shape {shape!r} has no field {field!r}")
        _positive_int(f"shape.{field}", getattr(shape, field))
    _heads(shape.n_heads, shape.n_kv_heads)


def decoder_layer_cost(shape: DecoderShape, B: int, Tq: int, Tk: int, E: int | float) -> Cost:
    """One Llama-style layer (RMSNorm, GQA attention, SwiGLU) on Tq new tokens, Tk in context.

    FLOPs: projections 2·B·Tq·d_model·(Hq + 2·Hkv)·hd for Q, K, V plus 2·B·Tq·Hq·hd·d_model
    for O; SwiGLU 3 × 2·B·Tq·d_model·d_ff (gate, up, down); causal attention as in
    ``attention_cost`` (Kaplan et al. 2020 / PaLM app. B count the same matmuls).
    Bytes: weights read once (projections, MLP, 2 norm vectors), the layer input read and
    output written (B·Tq·d_model each), the Tk - Tq cached K/V tokens read and the Tq new
    ones written. Intermediate activations are treated as on-chip (the lower bound).
    """
    _check_decoder(shape)
    B, Tq, Tk = _positive_int("B", B), _positive_int("Tq", Tq), _positive_int("Tk", Tk)
    if Tk < Tq:
        raise ValueError(f"Tk (context) must be >= Tq (new tokens), got Tq={Tq}, Tk={Tk}")
    E = _element_size("E", E)
    dm, hd, dff = shape.d_model, shape.head_dim, shape.d_ff
    hq, hkv = shape.n_heads, shape.n_kv_heads
    attn = attention_cost(B, hq, hkv, Tq, Tk, hd, hd, E, causal=True)
    proj = dm * (hq + 2 * hkv) * hd + hq * hd * dm
    mlp = 3 * dm * dff
    flops = 2 * B * Tq * (proj + mlp) + attn.flops
    weights = proj + mlp + 2 * dm
    activations = 2 * B * Tq * dm
    cache = 2 * B * hkv * hd * Tk
    return Cost(flops, E * (weights + activations + cache))


def _embed_and_head_cost(shape: DecoderShape, B: int, n: int, E: int | float) -> Cost:
    """Embedding lookup of B·n rows, then final RMSNorm and LM head producing B·n logits."""
    dm, vocab = shape.d_model, shape.vocab
    embed = 2 * B * n * dm
    head = B * n * dm + dm + vocab * dm + B * n * vocab
    return Cost(2 * B * n * dm * vocab, E * (embed + head))


def decoder_prefill_cost(shape: DecoderShape, B: int, P: int, E: int | float) -> Cost:
    """The whole decoder on a prompt of P tokens: layers × ``decoder_layer_cost`` (Tq = Tk =
    P), plus embedding rows read and logits for all P positions (2·B·P·d_model·vocab FLOPs,
    the full LM head matrix read once). Tied embeddings change no traffic: the lookup reads
    rows, the head reads the matrix.
    """
    _check_decoder(shape)
    B, P = _positive_int("B", B), _positive_int("P", P)
    return decoder_layer_cost(shape, B, P, P, E).times(shape.layers) + _embed_and_head_cost(
        shape, B, P, E
    )


def decoder_decode_step_cost(shape: DecoderShape, B: int, T: int, E: int | float) -> Cost:
    """One decode step with T tokens already cached: the new token attends to T + 1 keys.

    Every weight is read once per step whatever B is, and every layer's whole cache is
    read: weights amortise over the batch, the cache never does (scaling book).
    """
    _check_decoder(shape)
    B, T = _positive_int("B", B), _positive_int("T", T)
    return decoder_layer_cost(shape, B, 1, T + 1, E).times(shape.layers) + _embed_and_head_cost(
        shape, B, 1, E
    )


# --- The hierarchical roofline: where each byte is served from -----------------------------
#
# A flat Cost charges every byte to main memory. The hierarchical roofline (Williams et al.
# 2009, sec. 5; Nsight Compute's "hierarchical roofline") adds a roof per cache level: an op
# is bound by the slowest of compute, main-memory traffic and cache-level traffic. Every
# algorithm below reports the same three terms, so tiled attention, SDPA, decode, linear
# attention and the decoder are judged by one rule (``level_bytes``, ``hierarchical_verdict``).

FLASH_BLOCK = 128
"""The query and key block of FlashAttention-2's forward kernel for head dims up to 128
(Dao, "FlashAttention-2", 2023, sec. 3.3: 128×128 blocks on A100/H100), the schedule
SDPA's fused backends run; torch's CPU flash kernel splits queries into 32-256 rows."""


@dataclass(frozen=True)
class Traffic:
    """FLOPs and bytes of one call, split by how often the algorithm moves each byte.

    ``compulsory``: every input read once and every output written once, the least any
    schedule moves to and from main memory (Hong and Kung, 1981: the I/O lower bound's
    leading term). ``rereads``: bytes the algorithm moves again (K/V once more per query
    block, chunk states written and read back, a recurrent state per token). ``working_set``:
    the bytes one (batch, kv-head) tile re-reads; if they fit in a cache level the re-reads
    are served there (0 when nothing is re-read).
    """

    flops: int | float
    compulsory: int | float
    rereads: int | float = 0
    working_set: int | float = 0

    def __post_init__(self) -> None:
        Cost(self.flops, self.compulsory)  # validates flops >= 0, compulsory > 0
        for name in ("rereads", "working_set"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"Traffic.{name} must be finite and >= 0, got {value!r}")

    @property
    def total(self) -> int | float:
        """Every byte the cores request: compulsory + re-reads (the cache level's traffic)."""
        return self.compulsory + self.rereads

    def flat(self) -> Cost:
        """The single-level cost: every byte charged to main memory."""
        return Cost(self.flops, self.total)

    def times(self, n: int) -> Traffic:
        """``n`` independent calls (e.g. one per layer): the working set stays one tile's."""
        n = _positive_int("n", n)
        return Traffic(self.flops * n, self.compulsory * n, self.rereads * n, self.working_set)

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(
            self.flops + other.flops,
            self.compulsory + other.compulsory,
            self.rereads + other.rereads,
            max(self.working_set, other.working_set),
        )


def reread_traffic(compulsory: Cost, rereads: int | float, working_set: int | float) -> Traffic:
    """A Traffic from an op's compulsory Cost plus the re-reads its schedule adds.

    The entry point for new algorithms (paged attention: the compulsory cost of the pages
    it reads, re-reads of pages shared between sequences, a working set of one block table's
    pages).
    """
    return Traffic(compulsory.flops, compulsory.bytes, rereads, working_set)


def fits_in_cache(working_set: int | float, cache_bytes: int | float) -> bool:
    """The working-set rule: a re-read set is served by a cache level iff it fits in it."""
    if not (cache_bytes > 0 and math.isfinite(cache_bytes)):
        raise ValueError(f"cache_bytes must be finite and > 0, got {cache_bytes!r}")
    return working_set <= cache_bytes


def level_bytes(traffic: Traffic, cache_bytes: int | float | None) -> tuple[float, float]:
    """(main-memory bytes, cache-level bytes) of ``traffic`` with a cache of ``cache_bytes``.

    Every requested byte passes the cache level (``total``). Main memory sees the compulsory
    bytes, plus the re-reads when their working set does not fit (or the cache is unknown):
    compulsory <= main memory <= compulsory + re-reads.
    """
    fits = cache_bytes is not None and fits_in_cache(traffic.working_set, cache_bytes)
    dram = traffic.compulsory if fits or not traffic.rereads else traffic.total
    return float(dram), float(traffic.total)


def level_seconds(
    traffic: Traffic,
    peak_flops: float,
    bandwidth: float,
    cache_bandwidth: float | None = None,
    cache_bytes: int | float | None = None,
) -> dict[str, float]:
    """The time each roof allows: {"compute": F/peak, "dram": main/bandwidth, "cache": ...}.

    "cache" (cache-level bytes / cache bandwidth) is present only when both the cache's size
    and bandwidth are known; the op can't finish faster than the largest entry.
    """
    peak, bw = _roof(peak_flops, bandwidth)
    dram, cached = level_bytes(traffic, cache_bytes)
    out = {"compute": traffic.flops / peak, "dram": dram / bw}
    if cache_bandwidth is not None and cache_bytes is not None:
        out["cache"] = cached / _roof(peak, cache_bandwidth)[1]
    return out


def hierarchical_verdict(
    traffic: Traffic,
    peak_flops: float,
    bandwidth: float,
    cache_bandwidth: float | None = None,
    cache_bytes: int | float | None = None,
    cache_name: str = "L2",
) -> str:
    """ "compute-bound", "memory-bound (DRAM)" or "memory-bound (<cache_name>)": the slowest roof.

    Memory-bound at a level iff its time exceeds the compute time (at main memory this is
    ``is_memory_bound`` on the main-memory intensity); the cache level wins only when it is
    slower than main memory too.
    """
    t = level_seconds(traffic, peak_flops, bandwidth, cache_bandwidth, cache_bytes)
    if t.get("cache", 0.0) > max(t["compute"], t["dram"]):
        return f"memory-bound ({cache_name})"
    return "memory-bound (DRAM)" if t["dram"] > t["compute"] else "compute-bound"


def tiled_attention_traffic(
    B: int,
    Hq: int,
    Hkv: int,
    Tq: int,
    Tk: int,
    D: int,
    Dv: int,
    E: int | float,
    causal: bool,
    block_q: int,
    block_k: int,
) -> Traffic:
    """Tiled attention: ``attention_cost``'s bytes are compulsory, the rest of
    ``tiled_attention_cost``'s (K/V once more per extra query block, FlashAttention Thm. 2)
    are re-reads of one (batch, kv-head) K/V slice, E·Tk·(D + Dv) bytes.
    """
    plain = attention_cost(B, Hq, Hkv, Tq, Tk, D, Dv, E, causal)
    tiled = tiled_attention_cost(B, Hq, Hkv, Tq, Tk, D, Dv, E, causal, block_q, block_k)
    rereads = tiled.bytes - plain.bytes
    return reread_traffic(plain, rereads, E * Tk * (D + Dv) if rereads else 0)


def attention_traffic(
    B: int,
    Hq: int,
    Hkv: int,
    Tq: int,
    Tk: int,
    D: int,
    Dv: int,
    E: int | float,
    causal: bool,
    block_q: int = FLASH_BLOCK,
    block_k: int = FLASH_BLOCK,
) -> Traffic:
    """Fused attention (SDPA, a decode kernel): tiled attention with the library's blocks.

    SDPA's flash backends are FlashAttention with FLASH_BLOCK blocks, so SDPA and a tiled
    kernel of the same shape get the same compulsory bytes and the same re-read working set.
    Decode (Tq ≤ block_q) is one query block: compulsory bytes only.
    """
    return tiled_attention_traffic(B, Hq, Hkv, Tq, Tk, D, Dv, E, causal, block_q, block_k)


def linear_attention_recurrent_traffic(
    B: int, H: int, T: int, D: int, Dv: int, E: int | float, E_state: int | float | None = None
) -> Traffic:
    """T recurrent steps (``linear_attention_recurrent_step_cost`` × T): q, k, v, y and the
    state read once and written once are compulsory; the other T - 1 reads and writes of the
    state are re-reads of one (batch, head) state, E_state·D·(Dv + 1) bytes.
    """
    T = _positive_int("T", T)
    steps = linear_attention_recurrent_step_cost(B, H, D, Dv, E, E_state).times(T)
    Es = E if E_state is None else E_state
    state = Es * _positive_int("B", B) * _positive_int("H", H) * 2 * D * (Dv + 1)
    rereads = state * (T - 1)
    return Traffic(steps.flops, steps.bytes - rereads, rereads, Es * D * (Dv + 1) if rereads else 0)


def linear_attention_chunked_traffic(
    B: int,
    H: int,
    T: int,
    D: int,
    Dv: int,
    chunk: int,
    E: int | float,
    E_state: int | float | None = None,
    initial_state: bool = False,
) -> Traffic:
    """The chunked form: ``linear_attention_chunked_cost`` is compulsory; the state entering
    each of the N = ⌈T/chunk⌉ chunks is written and read back (the "materialization" of Yang
    et al., GLA, 2024, sec. 4.1), 2·N·E_state·D·(Dv + 1) per (batch, head), whose working
    set is that head's N states.
    """
    c = linear_attention_chunked_cost(B, H, T, D, Dv, chunk, E, E_state, initial_state)
    Es = E if E_state is None else E_state
    states = -(-T // chunk) * Es * D * (Dv + 1)
    return reread_traffic(c, 2 * B * H * states, states)


def decoder_prefill_traffic(shape: DecoderShape, B: int, P: int, E: int | float) -> Traffic:
    """``decoder_prefill_cost`` is compulsory; each layer's causal attention re-reads its K/V
    as ``attention_traffic`` does (working set: one layer's (batch, kv-head) slice)."""
    flat = decoder_prefill_cost(shape, B, P, E)
    hd = shape.head_dim
    attn = attention_traffic(B, shape.n_heads, shape.n_kv_heads, P, P, hd, hd, E, True)
    return reread_traffic(flat, attn.rereads * shape.layers, attn.working_set)


def decoder_decode_step_traffic(shape: DecoderShape, B: int, T: int, E: int | float) -> Traffic:
    """One decode step: every weight and cached token is read once, nothing is re-read."""
    return reread_traffic(decoder_decode_step_cost(shape, B, T, E), 0, 0)


def _roof(peak_flops: float, bandwidth: float) -> tuple[float, float]:
    for name, value in (("peak_flops", peak_flops), ("bandwidth", bandwidth)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return float(peak_flops), float(bandwidth)


def ridge(peak_flops: float, bandwidth: float) -> float:
    """The ridge point peak / bandwidth in FLOP/byte (Williams et al., 2009).

    H100 SXM: 989e12 / 3.35e12 = 295.2 FLOP/byte.
    """
    peak, bw = _roof(peak_flops, bandwidth)
    return peak / bw


def attainable_flops(intensity: float, peak_flops: float, bandwidth: float) -> float:
    """The roofline: min(peak, intensity × bandwidth) FLOP/s."""
    peak, bw = _roof(peak_flops, bandwidth)
    if not (intensity >= 0 and math.isfinite(intensity)):
        raise ValueError(f"intensity must be finite and >= 0, got {intensity!r}")
    return min(peak, intensity * bw)


def is_memory_bound(intensity: float, peak_flops: float, bandwidth: float) -> bool:
    """True iff intensity < ridge: bandwidth, not compute, limits the op on that device."""
    if not (intensity >= 0 and math.isfinite(intensity)):
        raise ValueError(f"intensity must be finite and >= 0, got {intensity!r}")
    return intensity < ridge(peak_flops, bandwidth)


# --- Serving shapes: ragged (varlen) batches, the paged cache, and what padding wastes. ---


def _lengths(name: str, lens: object) -> list[int]:
    """A non-empty sequence of non-negative ints (one per sequence of a batch)."""
    try:
        values = list(lens)  # type: ignore[call-overload]
    except TypeError:
        raise ValueError(f"{name} must be a sequence of ints, got {lens!r}") from None
    if not values:
        raise ValueError(f"{name} must name at least one sequence, got {lens!r}")
    out = []
    for n in values:
        if isinstance(n, bool):
            raise ValueError(f"{name} must hold ints >= 0, got {n!r}")
        try:
            n = operator.index(n)
        except TypeError:
            raise ValueError(f"{name} must hold ints >= 0, got {n!r}") from None
        if n < 0:
            raise ValueError(f"{name} must hold ints >= 0, got {n!r}")
        out.append(n)
    return out


def varlen_attention_cost(
    q_lens: list[int],
    k_lens: list[int],
    Hq: int,
    Hkv: int,
    D: int,
    Dv: int,
    E: int | float,
    causal: bool,
) -> Cost:
    """A packed (varlen) batch: the sum of ``attention_cost`` over its sequences.

    Sequence b has q_lens[b] queries over k_lens[b] keys (bottom-right aligned, as in
    flash-attn's varlen kernels); each is its own dense attention, so FLOPs and bytes add up.
    A sequence with no queries costs nothing: the kernel skips it and reads none of its
    keys. Padding every sequence to the longest instead is ``padding_waste``.
    """
    qs, ks = _lengths("q_lens", q_lens), _lengths("k_lens", k_lens)
    if len(qs) != len(ks):
        raise ValueError(f"q_lens and k_lens must have one entry per sequence, got {qs}, {ks}")
    costs = [
        attention_cost(1, Hq, Hkv, q, k, D, Dv, E, causal) for q, k in zip(qs, ks, strict=True) if q
    ]
    if not costs:
        raise ValueError(f"q_lens must give some sequence a query, got {qs}")
    return Cost(sum(c.flops for c in costs), sum(c.bytes for c in costs))


def paged_decode_cost(
    seq_lens: list[int],
    Hq: int,
    Hkv: int,
    D: int,
    E: int | float,
    block_size: int,
    index_bytes: int | float = 4,
) -> Cost:
    """One decode token per sequence over a paged KV cache (vLLM / flash-attn layout).

    The dense ragged decode (``varlen_attention_cost`` with one query per sequence over its
    seq_lens[b] keys, the new one included) plus the bookkeeping a paged kernel reads:
    ceil(seq_lens[b] / block_size) block-table entries and one seq_len per sequence,
    `index_bytes` each (int32). FLOPs are the dense ones: blocks change where keys live,
    not how many there are.
    """
    lens = _lengths("seq_lens", seq_lens)
    if min(lens) < 1:
        raise ValueError(f"seq_lens must be >= 1 (the new token is cached), got {lens}")
    bs = _positive_int("block_size", block_size)
    ib = _element_size("index_bytes", index_bytes)
    dense = varlen_attention_cost([1] * len(lens), lens, Hq, Hkv, D, D, E, causal=True)
    table = sum(-(-n // bs) for n in lens) + len(lens)  # entries read, plus seq_lens
    return Cost(dense.flops, dense.bytes + ib * table)


@dataclass(frozen=True)
class PaddingWaste:
    """A dense batch padded to its longest sequence against the same batch run ragged."""

    padded: Cost
    ragged: Cost

    @property
    def flops(self) -> int | float:
        """FLOPs spent on padding."""
        return self.padded.flops - self.ragged.flops

    @property
    def bytes(self) -> int | float:
        """Bytes moved for padding."""
        return self.padded.bytes - self.ragged.bytes

    @property
    def byte_ratio(self) -> float:
        """Padded bytes over ragged bytes: the slowdown padding predicts for a memory-bound op."""
        return self.padded.bytes / self.ragged.bytes


def padding_waste(
    q_lens: list[int],
    k_lens: list[int],
    Hq: int,
    Hkv: int,
    D: int,
    Dv: int,
    E: int | float,
    causal: bool,
) -> PaddingWaste:
    """What padding a ragged batch to a dense (B, H, max T, D) one costs.

    Padded: ``attention_cost`` with B sequences of max(q_lens) queries over max(k_lens) keys
    (a padded kernel reads and scores every padding slot; masking them changes no traffic).
    Ragged: ``varlen_attention_cost``. For decode over long-tailed lengths the byte ratio
    is about max(T) / mean(T): the whole batch pays for its longest sequence.
    """
    ragged = varlen_attention_cost(q_lens, k_lens, Hq, Hkv, D, Dv, E, causal)
    B = len(_lengths("q_lens", q_lens))
    padded = attention_cost(B, Hq, Hkv, max(q_lens), max(k_lens), D, Dv, E, causal)
    return PaddingWaste(padded, ragged)
