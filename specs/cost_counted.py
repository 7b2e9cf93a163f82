"""COST-COUNTED's check: the cost model's FLOPs against the FLOPs an implementation counts on
its matmul paths, and its bytes against the sizes of the arrays an op reads and writes, for
matmul, attention and the tiny decoder.

The subject is a ``attnspec.specs.cost_clauses.CostSubject`` pairing a cost model with a FLOP counter:
an object with ``asarray``/``to_numpy``, the ``counted_attention``, ``counted_matmul`` and
``counted_decoder`` paths, and ``count_flops(fn, *args) -> (result, {aten op: FLOPs})``. The
torch implementation provides one (``attnspec.implementations.torch_impl.counted``, FlopCounterMode);
the clause itself is registered in ``attnspec.specs.cost_clauses``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from attnspec.specs.clauses import ClauseFailure
from attnspec.specs.decoder_weights import DecoderConfig, make_weights
from attnspec.specs.dtypes import BYTES_PER_ELEMENT
from attnspec.specs.runner import Target
from attnspec.specs.strategies import seeds

MATMUL_OPS = ("aten.mm", "aten.addmm", "aten.bmm", "aten.baddbmm")


def mismatch(what: str, got: Any, want: Any, **details: Any) -> ClauseFailure:
    """A failure reading "<what>: got X, expected Y", the figures kept for the report."""
    return ClauseFailure(f"{what}: got {got!r}, expected {want!r}", got=got, want=want, **details)


def matmul_flops(counts: dict[str, int]) -> int:
    """The FLOPs counted in matmul-family aten ops (SDPA, counted on some devices, is left out)."""
    return sum(n for op, n in counts.items() if op in MATMUL_OPS)


def nbytes(t: Target, *natives: Any) -> int:
    """The bytes the native arrays occupy in the working dtype."""
    return sum(t.raw(x).size for x in natives) * BYTES_PER_ELEMENT[t.dtype]


def check_counted_attention(t: Target, data: st.DataObject) -> None:
    B = data.draw(st.integers(1, 3), label="B")
    Hkv = data.draw(st.integers(1, 3), label="Hkv")
    Hq = Hkv * data.draw(st.integers(1, 4), label="query heads per kv head")
    Tk = data.draw(st.integers(1, 12), label="Tk")
    Tq = data.draw(st.integers(1, Tk + 3), label="Tq")
    D = data.draw(st.integers(1, 12), label="D")
    Dv = data.draw(st.integers(1, 12), label="Dv")
    causal = data.draw(st.booleans(), label="causal")
    E = BYTES_PER_ELEMENT[t.dtype]
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    q = rng.standard_normal((B, Hq, Tq, D))  # (B, Hq, Tq, D)
    k = rng.standard_normal((B, Hkv, Tk, D))  # (B, Hkv, Tk, D)
    v = rng.standard_normal((B, Hkv, Tk, Dv))  # (B, Hkv, Tk, Dv)
    call = f"attention_cost({B}, {Hq}, {Hkv}, {Tq}, {Tk}, {D}, {Dv}, {E}, causal={causal})"
    model = t.impl.attention_cost(B, Hq, Hkv, Tq, Tk, D, Dv, E, causal)
    # A kernel that skips masked keys does, row by row, attention over the keys it sees.
    counted = 0
    for i in range(Tq):
        seen = min(Tk, i + Tk - Tq + 1) if causal else Tk
        if seen > 0:
            row = [t.native(x) for x in (q[:, :, i : i + 1], k[:, :, :seen], v[:, :, :seen])]
            _, ops = t.impl.count_flops(t.impl.counted_attention, *row, causal=False)
            counted += matmul_flops(ops)
    if model.flops != counted:
        raise mismatch(
            t.where(f"{call}.flops vs FlopCounterMode on attention rows"), model.flops, counted
        )
    natives = [t.native(x) for x in (q, k, v)]
    o = t.impl.counted_attention(*natives, causal=False)  # (B, Hq, Tq, Dv)
    tensors = nbytes(t, *natives, o)
    if model.bytes != tensors:
        raise mismatch(t.where(f"{call}.bytes vs q, k, v, o nbytes"), model.bytes, tensors)


def check_counted_matmul(t: Target, data: st.DataObject) -> None:
    B, D, F = (data.draw(st.integers(1, 48), label=n) for n in ("B", "D", "F"))
    E = BYTES_PER_ELEMENT[t.dtype]
    x = t.native(np.ones((B, D)))  # (B, D)
    w = t.native(np.ones((D, F)))  # (D, F)
    y, ops = t.impl.count_flops(t.impl.counted_matmul, x, w)  # (B, F)
    model = t.impl.matmul_cost(B, D, F, E)
    tensors = nbytes(t, x, w, y)
    if (model.flops, model.bytes) != (matmul_flops(ops), tensors):
        raise mismatch(
            t.where(f"matmul_cost({B}, {D}, {F}, {E}) vs counted FLOPs, x, w, y nbytes"),
            (model.flops, model.bytes),
            (matmul_flops(ops), tensors),
        )


def check_counted_decoder(t: Target, data: st.DataObject) -> None:

    Hkv = data.draw(st.integers(1, 2), label="n_kv_heads")
    config = DecoderConfig(
        vocab=data.draw(st.integers(2, 40), label="vocab"),
        d_model=data.draw(st.integers(1, 24), label="d_model"),
        layers=data.draw(st.integers(1, 2), label="layers"),
        n_heads=Hkv * data.draw(st.integers(1, 3), label="heads per kv head"),
        n_kv_heads=Hkv,
        head_dim=2 * data.draw(st.integers(1, 4), label="head_dim / 2"),
        d_ff=data.draw(st.integers(1, 32), label="d_ff"),
        tied_embeddings=data.draw(st.booleans(), label="tied"),
        max_len=16,
    )
    B, P = data.draw(st.integers(1, 2), label="B"), data.draw(st.integers(1, 8), label="P")
    E = BYTES_PER_ELEMENT[t.dtype]
    weights = {
        name: t.native(w)
        for name, w in make_weights(config, data.draw(seeds(), label="seed")).items()
    }
    model = t.impl.counted_decoder(config, weights)
    token_rng = np.random.default_rng(data.draw(seeds(), label="token seed"))
    tokens = token_rng.integers(0, config.vocab, (B, P + 1))  # (B, P + 1)
    L, hq, hd = config.layers, config.n_heads, config.head_dim
    # The decoder's attention is torch SDPA, which FlopCounterMode reports as 0 on CPU and
    # counts densely elsewhere: compare the matmul FLOPs with the model minus attention.
    (_, cache), ops = t.impl.count_flops(model.prefill, t.native(tokens[:, :P], "int64"))
    attn = L * t.impl.attention_cost(B, hq, Hkv, P, P, hd, hd, E, True).flops
    want = t.impl.decoder_prefill_cost(config, B, P, E).flops - attn
    if matmul_flops(ops) != want:
        raise mismatch(
            t.where(
                f"decoder_prefill_cost({config}, B={B}, P={P}) minus attention "
                "vs counted matmul FLOPs"
            ),
            want,
            matmul_flops(ops),
        )
    _, ops = t.impl.count_flops(model.decode, t.native(tokens[:, P:], "int64"), cache)
    attn = L * t.impl.attention_cost(B, hq, Hkv, 1, P + 1, hd, hd, E, True).flops
    want = t.impl.decoder_decode_step_cost(config, B, P, E).flops - attn
    if matmul_flops(ops) != want:
        raise mismatch(
            t.where(
                f"decoder_decode_step_cost({config}, B={B}, T={P}) minus attention "
                "vs counted matmul FLOPs"
            ),
            want,
            matmul_flops(ops),
        )


def check_counted(t: Target, data: st.DataObject) -> None:
    """Check one drawn op: attention, matmul or the decoder."""
    op = data.draw(st.sampled_from(["attention", "matmul", "decoder"]), label="op")
    {
        "attention": check_counted_attention,
        "matmul": check_counted_matmul,
        "decoder": check_counted_decoder,
    }[op](t, data)
