"""Hypothesis strategies for every spec area: shapes, seeds, magnitudes and the arrays they make.

Arrays are drawn as a seed, not element by element: the examples stay fast at realistic sizes
and a failure still reproduces exactly from the printed draws.

Real kernels switch code paths by size and magnitude, so besides a small case every example
of a shape-drawing clause may check a realistic one (`cases`: the first example of every run,
and REAL_SHARE of the others): key and cache lengths at and around powers of two up to 4096
(split-KV and tile boundaries), the GQA group sizes and head dims of real models, batches of
long caches, and the shapes of the models in attnspec.specs.presets; an attention example's realistic
case runs again over LONG_CONTEXT keys (32769, 65537: past the 16-bit wraps) with a head dim
shrunk to the budgets. A realistic case is decode-shaped
(one query, or a chunk of 2-16, against a long cache) unless it is a prefill of at most
PREFILL_MAX tokens, and its batch, heads and length shrink until one attention call costs at most
SCORE_BUDGET multiply-adds over at most CACHE_BUDGET cached key elements.

Hypothesis builds the first example of every run from the first entry of every menu, so each
menu leads with a realistic value: that example (the only one `--tier smoke` runs) is a decode
over 1025 keys by 2 KV heads of 3 query heads, head dim 80, with logits of 1e5 and a hostile mask
of 1e10 where a clause draws those; with `longest`, 4097 keys by one KV head of 16 query heads of
head dim 64. suite/meta/test_regimes.py checks what the default tier reaches.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from hypothesis import strategies as st

from attnspec.specs import limits
from attnspec.specs.decoder_weights import DecoderConfig
from attnspec.specs.presets import PRESETS, Preset
from attnspec.specs.reference.linear import FEATURE_MAPS

HEAD_DIMS = (1, 3, 8, 16, 17, 32, 63, 64, 96, 128)  # odd sizes on purpose
MODEL_HEAD_DIMS = (64, 80, 96, 112, 128, 192, 256)  # what real models use
GROUP_SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 16)  # query heads per KV head, non-powers of two included
BOUNDARY_LENGTHS = tuple(sorted({2**k + d for k in range(4, 13) for d in (-1, 0, 1)}))  # 15..4097
REAL_GROUPS = (3, 7, 8, 16, 5, 6, 1, 2, 4)  # query heads per KV head drawn in real cases
REAL_HEAD_DIMS = (80, 64, 256, 96, 64, 192, 112, 128)
# Key-length bands of BOUNDARY_LENGTHS, each led by the length the first (all-simplest) example
# of every run takes: Hypothesis starts from index 0 of every sampled_from, so each run's first
# example is a realistic decode over 1025 keys, 2 KV heads of 3 query heads, head dim 80.
SPLIT_KV = (1025, 1023, 2049, 1024, 2047, 2048)  # flash-decoding paths switch near here
TILES = (129, 127, 65, 513, 255, 257, 63, 33, 17, 31, 15, 16, 32, 64, 128, 256, 511, 512)
LONGEST = (4097, 4095, 4096)
# Long contexts (today's real contexts reach 32k-128k), where 16-bit lengths and positions wrap
# (32768, 65536): each realistic attention case also runs over these many keys, with its heads
# and head dim shrunk to fit the budgets (`long_contexts`).
LONG_CONTEXT = (32769, 65537)
LONG_MIN_D = 4  # a long context keeps its length and halves its head dim down to this
LENGTH_BANDS = (SPLIT_KV, TILES, SPLIT_KV, LONGEST)
LONGEST_HEADS = (1, 16, 64)  # (Hkv, G, D) of a longest-first clause's first example
# A whole model layer (every KV head, Hq >= 32 for 7B+ models): kernels pick launch shapes by
# head count, and a wrong head map needs two KV heads to show. It keeps its heads and shrinks
# its batch and length instead, down to WHOLE_MIN_T keys.
WHOLE_MIN_T = 33
WIDE_LAYER = (4, 8)  # KV heads, and the least query heads per KV head, of `whole_layer`'s case
MLA_DIMS = (192, 128)  # DeepSeek-V2/V3 attention: q.k over 192 dims, values of 128 (Dv != D)
PREFILL_MAX = 513  # longest prefill (Tq = Tk) a real attention case draws
CHUNK_QUERIES = (2, 16)  # chunked-prefill / speculative-verify chunk sizes against a long cache
SCORE_BUDGET = 16 * 4097 * 64  # multiply-adds B*Hq*Tq*Tk*D of one call: 16 heads over 4097 keys
CACHE_BUDGET = (1 << 18) + (1 << 12)  # elements B*Hkv*Tk*D of the keys of one real case (2 MB)
REAL_SHARE = ("yes", "no", "no", "no", "no")  # examples with a realistic case (always the first)
VALUE_KINDS = ("normal", "normal", "normal", "offset", "tiny", "ties")
VALUE_OFFSET = 1e4  # "offset" values: 1e4 + standard normal noise
TINY_SCALE = {"float64": 1e-6, "float32": 1e-6, "float16": 1e-3, "bfloat16": 1e-6}


def seeds() -> st.SearchStrategy[int]:
    """Seeds for numpy's generator; every array in a check comes from one drawn seed."""
    return st.integers(0, 2**32 - 1)


def normal(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    """Standard normal values times `scale`, as float64. Drawn in float32 (half the time of
    float64: long contexts draw millions), so they hold in every working dtype up to float32
    exactly before the scale."""
    x = rng.standard_normal(shape, dtype=np.float32).astype(np.float64)
    return x if scale == 1.0 else x * scale


def scales() -> st.SearchStrategy[float | None]:
    """The softmax scale: None (1/sqrt(D)) most often, else a custom positive value."""
    return st.one_of(st.none(), st.floats(0.05, 2.0))


@st.composite
def cases(
    draw: st.DrawFn,
    small: st.SearchStrategy[Any],
    real: st.SearchStrategy[Any],
    preset: Any,
    longer: Callable[[Any], list[Any]] | None = None,
) -> list[Any]:
    """A small case, and in a share of the examples (REAL_SHARE) a realistic one after it, then
    `longer(realistic)`: the same heads over long contexts, drawing nothing of their own, so
    every other draw stays what it was. Only the realistic one (the model's shapes) when the
    run is restricted to a preset. suite/meta/test_regimes.py proves that the default tier's
    share reaches every regime."""
    if preset is not None:
        return [draw(real, label="model case")]
    if draw(st.sampled_from(REAL_SHARE), label="realistic case too") == "yes":
        found = [draw(small, label="small case"), draw(real, label="realistic case")]
        return found + (longer(found[1]) if longer is not None else [])
    return [draw(small, label="small case")]


LOGIT_SIZES = (1e5, 1e-3, 1.0, 1e3, 5e3, 3e4)  # largest |logit| ATTN-STABLE / FLASH-STABLE draw
LOGIT_CAP = {"float16": 3e4}  # float16 cannot hold a logit of 1e5 (its largest finite is 65504)
HOSTILE_LOGITS = {"float64": (1e10, 1e5), "float32": (1e10, 1e5), "bfloat16": (1e10, 1e5)}
HOSTILE_LOGITS_FP16 = (3e4,)


def logit_sizes(dtype: str) -> st.SearchStrategy[float]:
    """The largest |logit| of an example, from 1e-3 to 1e5 (what the dtype can hold)."""
    cap = LOGIT_CAP.get(dtype, np.inf)
    return st.sampled_from([x for x in LOGIT_SIZES if x <= cap])


def hostile_logits(dtype: str) -> st.SearchStrategy[float]:
    """L for a hostile mask (visible logits -L, masked +L): past what any finite mask offsets."""
    return st.sampled_from(HOSTILE_LOGITS.get(dtype, HOSTILE_LOGITS_FP16))


def value_kinds() -> st.SearchStrategy[str]:
    """How values are drawn: normal, a large offset (1e4 + noise), tiny, or keys with exact ties."""
    return st.sampled_from(VALUE_KINDS)


def shaped_values(
    rng: np.random.Generator, shape: tuple[int, ...], kind: str, dtype: str
) -> np.ndarray:
    """Values of `kind` (see value_kinds; "ties" values are normal, their keys tie)."""
    x = normal(rng, shape)
    if kind == "offset":
        return VALUE_OFFSET + x
    if kind == "tiny":
        return x * TINY_SCALE[dtype]
    return x


def tie_keys(k: np.ndarray) -> np.ndarray:
    """Keys (..., Tk, D) where each odd position repeats the key before it: exact logit ties."""
    tied = k.copy()
    tied[..., 1::2, :] = k[..., 0 : k.shape[-2] - 1 : 2, :]
    return tied


# ---------------------------------------------------------------- attention shapes


@dataclass(frozen=True)
class AttnShape:
    """Shapes of one attention call: q (B, Hq, Tq, D), k (B, Hkv, Tk, D), v (B, Hkv, Tk, Dv)."""

    B: int
    Hq: int
    Hkv: int
    Tq: int
    Tk: int
    D: int
    Dv: int

    @property
    def q(self) -> tuple[int, int, int, int]:
        return (self.B, self.Hq, self.Tq, self.D)

    @property
    def k(self) -> tuple[int, int, int, int]:
        return (self.B, self.Hkv, self.Tk, self.D)

    @property
    def v(self) -> tuple[int, int, int, int]:
        return (self.B, self.Hkv, self.Tk, self.Dv)

    @property
    def o(self) -> tuple[int, int, int, int]:
        return (self.B, self.Hq, self.Tq, self.Dv)


def fit(
    B: int,
    Hkv: int,
    G: int,
    Tq: int,
    Tk: int,
    D: int,
    *,
    prefill: bool,
    whole: bool = False,
) -> tuple[int, int, int, int, int]:
    """(B, Hkv, Tq, Tk, D): shrink a batch of five or more down to 257 keys and one KV head
    first, then the batch and the KV heads; a long context (past BOUNDARY_LENGTHS) then halves
    its head dim down to LONG_MIN_D; then the length shrinks, until one call fits the budgets.
    `whole` (a whole layer's heads): the batch, then the length down to WHOLE_MIN_T go first."""

    def shorter(T: int) -> int:
        return max(L for L in BOUNDARY_LENGTHS + LONG_CONTEXT if L < T)

    while B * Hkv * G * Tq * Tk * D > SCORE_BUDGET or B * Hkv * Tk * D > CACHE_BUDGET:
        if whole and B > 1:
            B //= 2
        elif whole and Tk > WHOLE_MIN_T:
            Tk = shorter(Tk)
        elif B >= 5 and Tk > 257:
            Tk = shorter(Tk)
        elif B >= 5 and Hkv > 1:
            Hkv //= 2
        elif B > 1:
            B //= 2
        elif Hkv > 1:
            Hkv //= 2
        elif Tk > BOUNDARY_LENGTHS[-1] and D > LONG_MIN_D:
            D = max(D // 2, LONG_MIN_D)
        elif Tk > BOUNDARY_LENGTHS[0]:
            Tk = shorter(Tk)
        else:
            break
        Tq = Tk if prefill else min(Tq, Tk)
    return B, Hkv, Tq, Tk, D


@dataclass(frozen=True)
class Heads:
    """The heads of a realistic case: Hkv KV heads of G query heads, head dims D and Dv;
    `whole`: a whole model layer, kept whole by `fit`."""

    Hkv: int
    G: int
    D: int
    Dv: int
    whole: bool = False

    @property
    def keep(self) -> bool:
        """Whether `fit` keeps the heads (shrinking batch and length first): a whole layer, or
        a wide group (8+) over several KV heads, where a wrong head map shows."""
        return self.whole or (self.G >= 8 and self.Hkv >= 2)


@st.composite
def heads_and_dims(draw: st.DrawFn, preset: Preset | None, *, longest: bool = False) -> Heads:
    """A model's slice (Hkv <= 2 whole groups), a whole model layer (every head), DeepSeek's
    Dv != D, or drawn real-model sizes, the awkward ones (groups 3-7 and 16, head dims 80-112 and
    192-256) first; `longest` leads with the heads that fit 4097 keys (one KV head of 16 query
    heads, head dim 64). Head dims outside the implementation's declared limits move to ones
    inside (attnspec.specs.limits)."""
    kind = "model" if preset is not None else "drawn"
    if preset is None:
        kind = draw(st.sampled_from(("drawn", "drawn", "model", "whole", "mla")), label="heads")
        if kind in ("model", "whole"):
            preset = draw(st.sampled_from(PRESETS), label="model shapes")
    lim = limits.current()
    if preset is not None and kind == "whole":
        D = lim.head_dim(preset.D)
        return Heads(preset.Hkv, preset.group, D, D, whole=True)
    if preset is not None:
        D = lim.head_dim(preset.D)
        return Heads(preset.slice_kv_heads, preset.group, D, D)
    if kind == "mla":
        G = draw(st.sampled_from((1, 4, 16)), label="Hq/Hkv")
        return Heads(2, G, lim.head_dim(MLA_DIMS[0]), lim.head_dim(MLA_DIMS[1]))
    first = LONGEST_HEADS if longest else (2, REAL_GROUPS[0], REAL_HEAD_DIMS[0])
    Hkv = draw(st.sampled_from(leading(first[0], (2, 1, 4, 8))), label="Hkv")
    G = draw(st.sampled_from(leading(first[1], REAL_GROUPS)), label="Hq/Hkv")
    D = lim.head_dim(draw(st.sampled_from(leading(first[2], REAL_HEAD_DIMS)), label="D"))
    return Heads(Hkv, G, D, D)


def leading(first: Any, menu: tuple[Any, ...]) -> tuple[Any, ...]:
    """`menu` with `first` moved to the front (what the first example of a run takes)."""
    return (first, *(x for x in menu if x != first))


@st.composite
def real_lengths(
    draw: st.DrawFn, *, causal: bool, min_Tq: int, max_Tk: int, context: int, longest: bool
) -> tuple[int, int, bool]:
    """(Tq, Tk, prefill): one query or a 2-16 chunk against a boundary length (tile sizes up to
    513, the split-KV band 1023-2049, or 4095-4097), or a prefill of up to PREFILL_MAX."""
    kind = draw(st.sampled_from(("decode", "decode", "chunk", "prefill")), label="queries")
    if kind == "decode" and min_Tq > 1:
        kind = "chunk"
    fits = [T for T in BOUNDARY_LENGTHS if max(min_Tq, 2) <= T <= min(max_Tk, context)]
    if kind == "prefill":
        Tk = draw(st.sampled_from([T for T in fits if T <= PREFILL_MAX]), label="Tk")
        return Tk, Tk, True
    band = draw(st.sampled_from(bands(longest)), label="key lengths")
    Tk = draw(st.sampled_from([T for T in band if T in fits] or fits), label="Tk")
    if kind == "decode":
        return 1, Tk, False
    Tq = draw(st.integers(max(CHUNK_QUERIES[0], min_Tq), CHUNK_QUERIES[1]), label="Tq")
    return min(Tq, Tk) if causal else Tq, Tk, False


@st.composite
def real_attn_shapes(
    draw: st.DrawFn,
    *,
    causal: bool,
    min_Tq: int,
    max_Tk: int,
    preset: Preset | None,
    longest: bool = False,
) -> AttnShape:
    """A realistic attention shape within the budgets (see the module docstring); `longest`
    makes the first example a decode over 4097 keys."""
    h = draw(heads_and_dims(preset, longest=longest))
    context = preset.context if preset is not None else max_Tk
    Tq, Tk, prefill = draw(
        real_lengths(causal=causal, min_Tq=min_Tq, max_Tk=max_Tk, context=context, longest=longest)
    )
    B = draw(st.sampled_from((1, 2, 8)), label="B")
    B, Hkv, Tq, Tk, D = fit(B, h.Hkv, h.G, Tq, Tk, h.D, prefill=prefill, whole=h.keep)
    return AttnShape(B, Hkv * h.G, Hkv, Tq, Tk, D, h.Dv if D == h.D else D)


def bands(longest: bool) -> tuple[tuple[int, ...], ...]:
    """The length bands, the longest first when `longest` (LENGTH_BANDS otherwise)."""
    return (LONGEST, SPLIT_KV, TILES) if longest else LENGTH_BANDS


@st.composite
def attn_shapes(
    draw: st.DrawFn,
    *,
    max_B: int = 3,
    max_T: int = 40,
    min_Tk: int = 1,
    min_Tq: int = 1,
    causal: bool = False,
    max_heads: int = 3,
    max_group: int = 4,
) -> AttnShape:
    """Small shapes with GQA/MQA head groups, odd head dims and Tq != Tk (causal: Tk >= Tq)."""
    B = draw(st.integers(1, max_B), label="B")
    Hkv = draw(st.integers(1, max_heads), label="Hkv")
    group = draw(st.integers(1, max_group), label="Hq/Hkv")
    Tk = draw(st.integers(max(min_Tk, min_Tq if causal else 1), max_T), label="Tk")
    Tq = draw(st.integers(min_Tq, Tk if causal else max_T), label="Tq")
    lim = limits.current()
    D = lim.head_dim(draw(st.sampled_from(HEAD_DIMS), label="D"))
    Dv = lim.head_dim(draw(st.one_of(st.just(D), st.sampled_from(HEAD_DIMS)), label="Dv"))
    return AttnShape(B, Hkv * group, Hkv, Tq, Tk, D, Dv)


def attn_cases(
    *,
    max_T: int = 40,
    min_Tk: int = 1,
    min_Tq: int = 1,
    causal: bool = False,
    max_Tk: int = BOUNDARY_LENGTHS[-1],
    preset: Preset | None = None,
    longest: bool = False,
) -> st.SearchStrategy[list[AttnShape]]:
    """A small attention shape and a realistic one (keys up to `max_Tk`), see `cases`."""
    small = attn_shapes(max_T=max_T, min_Tk=min_Tk, min_Tq=min_Tq, causal=causal)
    real = real_attn_shapes(
        causal=causal, min_Tq=min_Tq, max_Tk=max_Tk, preset=preset, longest=longest
    )
    return cases(small, real, preset, partial(derived_cases, min_Tq=min_Tq))


def derived_cases(shape: AttnShape, *, min_Tq: int) -> list[AttnShape]:
    """The cases a realistic one brings along, drawing nothing: a whole wide layer, and the
    long contexts."""
    return [*whole_layer(shape), *long_contexts(shape, min_Tq=min_Tq)]


def whole_layer(shape: AttnShape) -> list[AttnShape]:
    """The realistic case's queries and head dims with a wide layer's heads: 4 KV heads of at
    least 8 query heads each (32+ query heads, as every 7B+ model has), keeping its heads while
    the batch and length shrink to the budgets (`fit`). Kernels pick launch shapes by head
    count, and a wrong head map only shows with a wide group over several KV heads. Decode and
    chunk cases only (a prefill of 32 heads leaves few keys in the budget)."""
    if shape.Tq == shape.Tk and shape.Tq > 1:
        return []
    Hkv, G = WIDE_LAYER[0], max(shape.Hq // shape.Hkv, WIDE_LAYER[1])
    B, Hkv, Tq, Tk, D = fit(1, Hkv, G, shape.Tq, shape.Tk, shape.D, prefill=False, whole=True)
    return [AttnShape(B, Hkv * G, Hkv, Tq, Tk, D, shape.Dv if D == shape.D else D)]


def long_contexts(shape: AttnShape, *, min_Tq: int) -> list[AttnShape]:
    """The realistic case's heads over each LONG_CONTEXT length: one query (or its chunk of up
    to 16, at least `min_Tq`), one batch row, its KV heads and head dim shrunk to the budgets
    (`fit`); a length the budgets can't hold even at head dim LONG_MIN_D is left out."""
    G = shape.Hq // shape.Hkv
    Tq = max(min(shape.Tq, CHUNK_QUERIES[1]) if shape.Tq > 1 else 1, min_Tq)
    found = []
    lim = limits.current()
    for L in LONG_CONTEXT:
        B, Hkv, Tq_fit, Tk, D = fit(1, shape.Hkv, G, Tq, L, shape.D, prefill=False)
        if Tk != L:
            continue
        D_taken = lim.head_dim(D)  # a declared head dim above the shrunk one may not fit
        if D_taken != D and fit(B, Hkv, G, Tq_fit, Tk, D_taken, prefill=False)[3] != L:
            lim.note(f"{L} keys (head dim {D_taken} past the budget)")
            continue
        found.append(AttnShape(B, Hkv * G, Hkv, Tq_fit, Tk, D_taken, D_taken))
    return found


def block_sizes(T: int, *, real: bool = False) -> st.SearchStrategy[int]:
    """1, a size up to T (usually not dividing it), or a size larger than T; for a long T the
    tile sizes kernels use (16, 32, 64, 128), which leave a remainder at boundary lengths."""
    if real and T > BOUNDARY_LENGTHS[-1]:  # a long context: a loop over 16-key tiles is slow
        return st.sampled_from((128, 64))
    if real and T > 16:
        return st.sampled_from((16, 32, 64, 128))
    return st.one_of(st.just(1), st.integers(1, max(T, 1)), st.integers(T + 1, 2 * T + 8))


# ---------------------------------------------------------------- KV-cache sequences


@dataclass(frozen=True)
class Sequence:
    """One cached sequence batch: q (B, Hq, T, D), k and v (B, Hkv, T, D), cache of max_len."""

    B: int
    Hq: int
    Hkv: int
    T: int
    D: int
    max_len: int

    @property
    def long(self) -> bool:
        """Whether checks should stay decode-shaped (a long prefix, few checked queries)."""
        return self.T > 64


@st.composite
def sequences(draw: st.DrawFn, *, max_T: int = 32, min_T: int = 1) -> Sequence:
    """Batch, heads (GQA/MQA), head dim, sequence length and a cache with some headroom."""
    B = draw(st.integers(1, 3), label="B")
    Hkv = draw(st.integers(1, 3), label="Hkv")
    G = draw(st.integers(1, 4), label="Hq/Hkv")
    T = draw(st.integers(min_T, max_T), label="T")
    D = limits.current().head_dim(draw(st.sampled_from(HEAD_DIMS), label="D"))
    headroom = draw(st.integers(0, 4), label="max_len - T")
    return Sequence(B, Hkv * G, Hkv, T, D, T + headroom)


@st.composite
def real_sequences(
    draw: st.DrawFn,
    *,
    min_T: int = 1,
    max_T: int = BOUNDARY_LENGTHS[-1],
    preset: Preset | None,
    longest: bool = False,
) -> Sequence:
    """A boundary length up to `max_T` with real heads, head dims and batches (a decode step
    over it fits the budgets); `longest` makes the first example 4097 tokens long."""
    h = draw(heads_and_dims(preset, longest=longest))
    G = h.G
    context = min(max_T, preset.context if preset is not None else max_T)
    fits = [T for T in BOUNDARY_LENGTHS if min_T <= T <= context]
    band = draw(st.sampled_from(bands(longest)), label="lengths")
    T = draw(st.sampled_from([T for T in band if T in fits] or fits), label="T")
    B = draw(st.sampled_from((1, 2, 8)), label="B")
    B, Hkv, _, T, D = fit(B, h.Hkv, G, 1, T, h.D, prefill=False, whole=h.keep)
    headroom = draw(st.integers(0, 4), label="max_len - T")
    return Sequence(B, Hkv * G, Hkv, T, D, T + headroom)


def sequence_cases(
    *, max_T: int = 32, min_T: int = 1, preset: Preset | None = None, longest: bool = False
) -> st.SearchStrategy[list[Sequence]]:
    """A small cached sequence and a realistic one, see `cases`."""
    real = real_sequences(min_T=min_T, preset=preset, longest=longest)
    return cases(sequences(max_T=max_T, min_T=min_T), real, preset)


@st.composite
def splits(draw: st.DrawFn, T: int, *, min_chunks: int = 1, max_chunks: int = 7) -> list[int]:
    """Chunk lengths (each >= 1) summing to T, drawn as a count and distinct cut points.

    For a long T: a long first chunk, then 1-3 chunks of 2-16 tokens (chunked prefill or
    speculative verification against a long cache).
    """
    if T == 1:
        return [1]
    if T > 64:
        tail = draw(
            st.lists(st.integers(*CHUNK_QUERIES), min_size=max(min_chunks - 1, 1), max_size=3),
            label="chunks after the first",
        )
        return [T - sum(tail), *tail]
    k = draw(st.integers(min(min_chunks, T), min(max_chunks, T)), label="number of chunks")
    cuts = st.lists(st.integers(1, T - 1), min_size=k - 1, max_size=k - 1, unique=True)
    edges = [0, *sorted(draw(cuts, label="cut points")), T]
    return [b - a for a, b in itertools.pairwise(edges)]


# ---------------------------------------------------------------- linear attention

AWKWARD_T = (63, 64, 65, 127, 500)  # lengths that most chunk sizes do not divide
LINEAR_CHUNKS = (64, 16, 32, 128)  # chunk sizes of real chunked linear-attention kernels


@dataclass(frozen=True)
class LinShape:
    """Shapes of one linear-attention call: q, k (B, H, T, Dk), v and the output (B, H, T, Dv)."""

    B: int
    H: int
    T: int
    Dk: int
    Dv: int

    @property
    def qk(self) -> tuple[int, int, int, int]:
        return (self.B, self.H, self.T, self.Dk)

    @property
    def v(self) -> tuple[int, int, int, int]:
        return (self.B, self.H, self.T, self.Dv)

    @property
    def long(self) -> bool:
        """Whether the token-by-token recurrent form is too slow to run over all of it."""
        return self.T > 600

    def o(self, T: int | None = None) -> tuple[int, int, int, int]:
        """The output shape for `T` positions (default: all of them)."""
        return (self.B, self.H, self.T if T is None else T, self.Dv)


@st.composite
def lin_shapes(draw: st.DrawFn, *, min_T: int = 1, max_T: int = 40) -> LinShape:
    """Batch, heads, head dims and a length: short, or one of the awkward long ones."""
    T = draw(st.one_of(st.integers(min_T, max_T), st.sampled_from(AWKWARD_T)), label="T")
    long = T > max_T
    B = draw(st.integers(1, 1 if long else 3), label="B")
    H = draw(st.integers(1, 2 if long else 3), label="H")
    Dk = draw(st.sampled_from(HEAD_DIMS), label="Dk")
    Dv = draw(st.one_of(st.just(Dk), st.sampled_from(HEAD_DIMS)), label="Dv")
    return LinShape(B, H, T, Dk, Dv)


@st.composite
def real_lin_shapes(draw: st.DrawFn, *, max_T: int) -> LinShape:
    """One or two heads of a real head dim over a boundary length of at least 129 tokens."""
    fits = [T for T in BOUNDARY_LENGTHS if 128 < T <= max_T]
    band = draw(st.sampled_from(bands(max_T >= LONGEST[0])), label="lengths")
    T = draw(st.sampled_from([T for T in band if T in fits] or fits), label="T")
    D = draw(st.sampled_from(MODEL_HEAD_DIMS[:5]), label="Dk = Dv")
    return LinShape(1, draw(st.integers(1, 2), label="H"), T, D, D)


def lin_cases(*, min_T: int = 1, max_long_T: int = 1025) -> st.SearchStrategy[list[LinShape]]:
    """A small (or awkward) linear-attention shape and a realistic one up to `max_long_T`."""
    return cases(lin_shapes(min_T=min_T), real_lin_shapes(max_T=max_long_T), None)


@dataclass(frozen=True)
class Options:
    """The keyword arguments every form takes: feature map and the normaliser's eps."""

    feature_map: str
    eps: float

    @property
    def kwargs(self) -> dict[str, Any]:
        return {"feature_map": self.feature_map, "eps": self.eps}


def options() -> st.SearchStrategy[Options]:
    """Feature map (ReLU or elu+1) and eps (the default 1e-6 or a larger one)."""
    return st.builds(
        Options, feature_map=st.sampled_from(FEATURE_MAPS), eps=st.sampled_from([1e-6, 1e-2])
    )


def chunk_sizes(T: int) -> st.SearchStrategy[int]:
    """Chunk sizes from 1 to a little past T; for a long T the real ones (16 ... 128)."""
    if T > 128:
        return st.sampled_from(LINEAR_CHUNKS)
    return st.integers(1, T + 3)


@st.composite
def cut_points(draw: st.DrawFn, T: int) -> list[int]:
    """One to three positions 0 < s < T where the sequence is split."""
    return sorted(draw(st.sets(st.integers(1, T - 1), min_size=1, max_size=3), label="splits"))


# ---------------------------------------------------------------- decoder

DECODER_LONG = (521, 529)  # prompt + decode capacities whose positions pass 16 ... 512
DECODER_WIDE_LEN = (33, 65)  # a wide head group (or a preset's) over a shorter sequence


@st.composite
def decoder_configs(
    draw: st.DrawFn, *, max_len: int = 12, real: bool = False, preset: Preset | None = None
) -> DecoderConfig:
    """Small Llama-style shapes: 1-3 layers, GQA/MQA head groups, tied or untied LM head.

    `real`: one layer, and either a capacity past 512 positions (generation crosses 16, 32,
    ... 512) with one KV head of 1-2 query heads, or 2-8 query heads per KV head (or a
    preset's head group and head dim) over 33 or 65 positions.
    """
    if real or preset is not None:
        kv, layers = 1, 1
        if preset is not None:
            group, hd = preset.group, preset.D
            capacity = draw(st.sampled_from(DECODER_WIDE_LEN), label="max_len")
        elif draw(st.sampled_from(("long", "wide")), label="sequence") == "long":
            group = draw(st.integers(1, 2), label="n_heads / n_kv_heads")
            hd = draw(st.sampled_from((16, 32)), label="head_dim")
            capacity = draw(st.sampled_from(DECODER_LONG), label="max_len")
        else:
            group = draw(st.sampled_from((8, 7, 3, 5, 6)), label="n_heads / n_kv_heads")
            hd = draw(st.sampled_from((16, 64, 80)), label="head_dim")
            capacity = draw(st.sampled_from(DECODER_WIDE_LEN), label="max_len")
    else:
        kv = draw(st.integers(1, 2), label="n_kv_heads")
        group = draw(st.integers(1, 3), label="n_heads / n_kv_heads")
        hd = draw(st.sampled_from((2, 4, 6, 8, 16)), label="head_dim")
        capacity = draw(st.integers(2, max_len), label="max_len")
        layers = draw(st.integers(1, 3), label="layers")
    return DecoderConfig(
        # A realistic case has a vocabulary and a width in which a position bug can show
        # (with 2 tokens every value row is one of 2 vectors, whatever the attention weights).
        vocab=draw(st.integers(32 if real else 2, 64), label="vocab"),
        d_model=draw(st.integers(16 if real else 8, 32), label="d_model"),
        layers=layers,
        n_heads=kv * group,
        n_kv_heads=kv,
        head_dim=hd,
        d_ff=draw(st.integers(4, 48), label="d_ff"),
        tied_embeddings=draw(st.booleans(), label="tied_embeddings"),
        max_len=capacity,
        rope_base=draw(st.sampled_from((10000.0, 100.0)), label="rope_base"),
    )


def decoder_cases(
    *, max_len: int = 12, preset: Preset | None = None
) -> st.SearchStrategy[list[DecoderConfig]]:
    """A small decoder config and a realistic one, see `cases`."""
    real = decoder_configs(max_len=max_len, real=True, preset=preset)
    return cases(decoder_configs(max_len=max_len), real, preset)
