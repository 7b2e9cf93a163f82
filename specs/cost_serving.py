"""Cost clauses for serving shapes: ragged (varlen) batches, paged decode and padding waste.

COST-RAGGED checks the hand-derived figures of one long-tailed decode batch and how the three
functions relate; COST-RAGGED-COUNTED ties varlen_attention_cost to what torch's
FlopCounterMode counts when the torch implementation attends each sequence's queries, row by
row, to the keys they see (a kernel that skips masked keys and empty sequences), and to the
sizes of the tensors each sequence reads and writes. Subjects are ``CostSubject``s, as in
attnspec.specs.cost_clauses.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from attnspec.specs.clauses import clause
from attnspec.specs.cost_clauses import element_sizes
from attnspec.specs.cost_counted import matmul_flops, mismatch
from attnspec.specs.dtypes import BYTES_PER_ELEMENT
from attnspec.specs.runner import Target
from attnspec.specs.strategies import seeds

# 16 decode sequences, long-tailed: 15 of 128 tokens and one of 8192 (Llama-3-8B attention).
TAIL = [128] * 15 + [8192]
TAIL_SHAPE = {"Hq": 32, "Hkv": 8, "D": 128, "E": 2}
TAIL_RAGGED = (165_675_008, 41_680_896)  # FLOPs, bytes
TAIL_PAGED_BYTES = 41_683_488  # block size 16: + 4 bytes x (632 table entries + 16 seq_lens)
TAIL_PADDED = (2_147_483_648, 537_133_056)
TAIL_WASTED_BYTES = 495_452_160  # 12.9x the ragged bytes


@st.composite
def ragged_lengths(draw: st.DrawFn, *, causal: bool, empty: bool) -> tuple[list[int], list[int]]:
    """Query and key counts of 1..6 sequences (queries <= keys when causal; some with no
    queries when `empty`), at least one with queries."""
    B = draw(st.integers(1, 6), label="sequences")
    k_lens = [draw(st.integers(1, 4096), label="keys") for _ in range(B)]
    q_lens = [
        draw(st.integers(0 if empty else 1, k if causal else 4096), label="queries") for k in k_lens
    ]
    if not any(q_lens):
        q_lens[0] = 1
    return q_lens, k_lens


@clause(
    "COST-RAGGED",
    "varlen_attention_cost sums attention_cost over the sequences, paged_decode_cost adds 4 "
    "bytes per block-table entry and seq_len read, padding_waste is the padded dense batch "
    "minus the ragged one: decoding 16 sequences of 15×128 and 1×8192 tokens (Hq=32, Hkv=8, "
    "D=128, E=2) moves 41,680,896 bytes ragged, 41,683,488 paged (block size 16) and "
    "537,133,056 padded (495,452,160 wasted, 12.9×)",
    needs=("varlen_attention_cost", "paged_decode_cost", "padding_waste", "attention_cost"),
)
def cost_ragged(t: Target, data: st.DataObject) -> None:
    m, s = t.impl, TAIL_SHAPE
    ones = [1] * len(TAIL)
    ragged = m.varlen_attention_cost(ones, TAIL, s["Hq"], s["Hkv"], s["D"], s["D"], s["E"], True)
    checks: list[tuple[str, Any, Any]] = [
        ("varlen_attention_cost (flops, bytes)", (ragged.flops, ragged.bytes), TAIL_RAGGED),
        (
            "paged_decode_cost(block_size=16).bytes",
            m.paged_decode_cost(TAIL, s["Hq"], s["Hkv"], s["D"], s["E"], 16).bytes,
            TAIL_PAGED_BYTES,
        ),
    ]
    waste = m.padding_waste(ones, TAIL, s["Hq"], s["Hkv"], s["D"], s["D"], s["E"], True)
    checks += [
        (
            "padding_waste.padded (flops, bytes)",
            (waste.padded.flops, waste.padded.bytes),
            TAIL_PADDED,
        ),
        ("padding_waste.bytes", waste.bytes, TAIL_WASTED_BYTES),
        ("padding_waste.byte_ratio (1 decimal)", round(waste.byte_ratio, 1), 12.9),
    ]
    for what, got, want in checks:
        if got != want:
            raise mismatch(t.where(f"{what} for 15x128 + 1x8192 decode"), got, want)
    causal = data.draw(st.booleans(), label="causal")
    q_lens, k_lens = data.draw(ragged_lengths(causal=causal, empty=False), label="lengths")
    Hkv = data.draw(st.integers(1, 8), label="Hkv")
    Hq = Hkv * data.draw(st.integers(1, 8), label="Hq/Hkv")
    D, Dv = (data.draw(st.integers(1, 256), label=n) for n in ("D", "Dv"))
    E = data.draw(element_sizes, label="E")
    args = (Hq, Hkv, D, Dv, E, causal)
    got = m.varlen_attention_cost(q_lens, k_lens, *args)
    parts = [
        m.attention_cost(1, Hq, Hkv, q, k, D, Dv, E, causal)
        for q, k in zip(q_lens, k_lens, strict=True)
    ]
    want = (sum(p.flops for p in parts), sum(p.bytes for p in parts))
    argtext = f"({q_lens}, {k_lens}, {Hq}, {Hkv}, {D}, {Dv}, {E}, {causal})"
    call = f"varlen_attention_cost{argtext}"
    if (got.flops, got.bytes) != want:
        raise mismatch(
            t.where(f"{call} vs the sum of attention_cost"), (got.flops, got.bytes), want
        )
    waste = m.padding_waste(q_lens, k_lens, *args)
    padded = m.attention_cost(len(q_lens), Hq, Hkv, max(q_lens), max(k_lens), D, Dv, E, causal)
    want_waste = (padded.flops - got.flops, padded.bytes - got.bytes)
    if (waste.flops, waste.bytes) != want_waste or min(want_waste) < 0:
        raise mismatch(
            t.where(f"padding_waste{argtext} (flops, bytes)"),
            (waste.flops, waste.bytes),
            want_waste,
        )
    bs = data.draw(st.sampled_from([1, 16, 256]) | st.integers(1, 64), label="block_size")
    paged = m.paged_decode_cost(k_lens, Hq, Hkv, D, E, bs)
    dense = m.varlen_attention_cost([1] * len(k_lens), k_lens, Hq, Hkv, D, D, E, True)
    table = 4 * (sum(-(-k // bs) for k in k_lens) + len(k_lens))
    if (paged.flops, paged.bytes) != (dense.flops, dense.bytes + table):
        raise mismatch(
            t.where(f"paged_decode_cost({k_lens}, {Hq}, {Hkv}, {D}, {E}, {bs})"),
            (paged.flops, paged.bytes),
            (dense.flops, dense.bytes + table),
        )


@clause(
    "COST-RAGGED-COUNTED",
    "varlen_attention_cost's FLOPs equal what FlopCounterMode counts when the torch "
    "implementation attends each sequence's queries to the keys they see (sequences without "
    "queries cost nothing), and its bytes equal the sizes of each sequence's q, k, v and output",
    needs=("varlen_attention_cost", "counted_attention", "count_flops"),
    examples=0.5,
)
def cost_ragged_counted(t: Target, data: st.DataObject) -> None:
    causal = data.draw(st.booleans(), label="causal")
    B = data.draw(st.integers(1, 3), label="sequences")
    k_lens = [data.draw(st.integers(1, 7), label="keys") for _ in range(B)]
    q_lens = [data.draw(st.integers(0, k if causal else 7), label="queries") for k in k_lens]
    if not any(q_lens):
        q_lens[0] = 1
    Hkv = data.draw(st.integers(1, 3), label="Hkv")
    Hq = Hkv * data.draw(st.integers(1, 3), label="Hq/Hkv")
    D, Dv = (data.draw(st.integers(1, 12), label=n) for n in ("D", "Dv"))
    E = BYTES_PER_ELEMENT[t.dtype]
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    nbytes = 0
    rows = []  # (q row, the keys and values it sees) for every query of every sequence
    for q_len, k_len in zip(q_lens, k_lens, strict=True):
        q = rng.standard_normal((1, Hq, q_len, D))  # (1, Hq, Tq, D)
        k = rng.standard_normal((1, Hkv, k_len, D))  # (1, Hkv, Tk, D)
        v = rng.standard_normal((1, Hkv, k_len, Dv))  # (1, Hkv, Tk, Dv)
        for i in range(q_len):
            seen = min(k_len, i + k_len - q_len + 1) if causal else k_len
            rows.append([t.native(x) for x in (q[:, :, i : i + 1], k[:, :, :seen], v[:, :, :seen])])
        if q_len:
            nbytes += E * (q.size + k.size + v.size + Hq * q_len * Dv)

    def attend_rows() -> None:
        for row in rows:
            t.impl.counted_attention(*row, causal=False)

    _, ops = t.impl.count_flops(attend_rows)
    flops = matmul_flops(ops)
    model = t.impl.varlen_attention_cost(q_lens, k_lens, Hq, Hkv, D, Dv, E, causal)
    call = (
        f"varlen_attention_cost({q_lens}, {k_lens}, {Hq}, {Hkv}, {D}, {Dv}, {E}, causal={causal})"
    )
    if (model.flops, model.bytes) != (flops, nbytes):
        raise mismatch(
            t.where(f"{call} (flops, bytes) vs FlopCounterMode per sequence and tensor sizes"),
            (model.flops, model.bytes),
            (flops, nbytes),
        )
