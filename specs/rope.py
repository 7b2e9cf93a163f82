"""RoPE clauses: rotary position embedding as an op of its own, as serving engines ship it.

`rope(x, positions, *, base=10000.0, rotary_dim=None, style="neox", scaling=None)` turns x
(T, H, D), packed tokens of any sequences, by each token's own position (positions (T,) int64,
unsorted and repeated as ragged batches give them); the result keeps x's shape, dtype and
device. "neox" pairs dim i with i + r/2, "gptj" dim 2i with 2i + 1 (r = rotary_dim, default D;
dims past r pass through). `scaling` is None, ("linear", factor) or Llama 3's ("llama3",
factor, low_freq_factor, high_freq_factor, original_max_position). specs/reference/rope.py
holds the float64 definition, docs/rope.md the hand-derived frequencies and the library APIs.

The budget: the dtype's rounding (a two-term sum, stored once) plus, pair by pair, what a phase
position × f_i computed in float32 may carry (`phase_bound`): a phase in bf16 or fp16 carries
65,536 or 8,192 times that and fails. Draws reach positions up to MAX_POSITION (Llama 3.1's
context) and around the powers of two where caches end, the head dims of real models and their
partial rotary dims, both styles and the bases of Llama 2/3, Qwen2 and Mistral.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from attnspec.specs.clauses import clause
from attnspec.specs.dtypes import UNIT_ROUNDOFF
from attnspec.specs.reference import rope as ref
from attnspec.specs.runner import Target
from attnspec.specs.strategies import normal, seeds
from attnspec.specs.tolerance import TINY, ClauseFailure, assert_close, floor

MAX_POSITION = 131072  # Llama 3.1's context
# Each menu leads with the realistic value Hypothesis tries first.
POSITIONS = (131071, 4096, 0, 131072, 65536, 4097, 32767, 8192, 1, 4095, 100000, 65535, 16385)
HEAD_DIMS = (128, 64, 256, 80, 96, 112, 192)  # what real models use
BASES = (500000.0, 10000.0, 1000000.0)  # Llama 3; Llama 2, Gemma, GPT-J; Qwen2, Mistral
LLAMA31 = ("llama3", 8.0, 1.0, 4.0, 8192)  # Llama 3.1 / 3.3 (with base 500000)
LLAMA32 = ("llama3", 32.0, 1.0, 4.0, 8192)  # Llama 3.2 1B / 3B
PHASE_ULPS = 4.0  # float32 roundings of position × f_i: the product, f_i's own, Llama 3's blend
INDEX_DTYPE = "int64"


@dataclass(frozen=True)
class RopeCase:
    """One call's shape and options."""

    T: int
    H: int
    D: int
    rotary_dim: int | None
    style: str
    base: float
    scaling: tuple[Any, ...] | None = None

    @property
    def r(self) -> int:
        return self.D if self.rotary_dim is None else self.rotary_dim

    @property
    def options(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "rotary_dim": self.rotary_dim,
            "style": self.style,
            "scaling": self.scaling,
        }


def rotary_dims(D: int) -> st.SearchStrategy[int | None]:
    """The whole head, or a part as GPT-J (64 of 256), GPT-NeoX-20B (24 of 96), Phi-2 (32 of 80)
    and ChatGLM (64 of 128) rotate."""
    parts = sorted({r for r in (D // 2, D // 4, 64, 32) if r < D and r % 2 == 0 and r >= 8})
    return st.one_of(st.none(), st.sampled_from(parts))


def positions(n: int) -> st.SearchStrategy[list[int]]:
    """n positions, each from the menu around powers of two or anywhere up to MAX_POSITION."""
    one = st.one_of(st.sampled_from(POSITIONS), st.integers(0, MAX_POSITION))
    return st.lists(one, min_size=n, max_size=n)


@st.composite
def rope_cases(
    draw: st.DrawFn, *, max_T: int = 4, min_r: int = 2, scaled: bool = False
) -> RopeCase:
    """A few tokens and heads at a real head dim (whole or partial rotary dim), a style and a
    base; with `scaled`, a linear or Llama 3 scaling (Llama 3.1's first)."""
    T = draw(st.integers(1, max_T), label="tokens")
    H = draw(st.integers(1, 3), label="heads")
    # Scaled: Llama 3.2's head dim 64 first (the first example of every run takes it).
    D = draw(st.sampled_from(HEAD_DIMS[1::-1] + HEAD_DIMS[2:] if scaled else HEAD_DIMS), label="D")
    r = draw(rotary_dims(D).filter(lambda r: r is None or r >= min_r), label="rotary_dim")
    style = draw(st.sampled_from(ref.STYLES), label="style")
    base = draw(st.sampled_from(BASES), label="base")
    scaling = draw(scalings(), label="scaling") if scaled else None
    return RopeCase(T, H, D, r, style, base, scaling)


@st.composite
def scalings(draw: st.DrawFn) -> tuple[Any, ...]:
    """Llama 3.1's and 3.2's settings, linear factors, and Llama 3 settings of other sizes."""
    kind = draw(st.sampled_from(["llama3.1", "linear", "llama3.2", "llama3"]), label="kind")
    if kind == "llama3.1":
        return LLAMA31
    if kind == "llama3.2":
        return LLAMA32
    if kind == "linear":
        factor = draw(st.one_of(st.sampled_from([4.0, 2.0]), st.floats(1.0, 16.0)), label="factor")
        return ("linear", factor)
    factor = draw(st.floats(1.0, 64.0), label="factor")
    low = draw(st.floats(0.5, 2.0), label="low_freq_factor")
    high = low + draw(st.floats(0.5, 8.0), label="high - low")
    orig = draw(st.sampled_from([8192, 4096, 2048, 16384]), label="original_max_position")
    return ("llama3", factor, low, high, orig)


def draw_x(t: Target, data: st.DataObject, c: RopeCase, T: int | None = None) -> np.ndarray:
    """x (T, H, D), standard normal, rounded to the working dtype."""
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    return t.inputs(normal(rng, (c.T if T is None else T, c.H, c.D)))[0]  # (T, H, D)


def call_rope(t: Target, x: np.ndarray, pos: np.ndarray, c: RopeCase, **change: Any) -> np.ndarray:
    """The implementation's rope(x, positions, **options) as float64, checked: inputs unchanged,
    x's shape and the working dtype."""
    __tracebackhide__ = True
    opts = {**c.options, **change}
    return t.call_native(
        "rope",
        t.native(x),
        t.native(np.asarray(pos, np.int64), INDEX_DTYPE),
        expect_shape=x.shape,
        **opts,
    )


def phase_bound(pos: np.ndarray, c: RopeCase) -> np.ndarray:
    """Radians (T, r/2) that a float32 phase may be off by: u32 · position · f_i times
    PHASE_ULPS, plus ln(base) · 2i/r for f_i = base^(-2i/r) computed in float32 (the exponent's
    rounding moves f_i by that many ulps)."""
    f = ref.inv_freq(c.r, c.base, c.scaling)  # (r/2,)
    exponent = np.arange(0, c.r, 2) / c.r  # (r/2,)
    ulps = PHASE_ULPS + math.log(c.base) * exponent  # (r/2,)
    p = np.abs(np.asarray(pos, np.float64))  # (T,)
    return UNIT_ROUNDOFF["float32"] * p[:, None] * (f * ulps)[None, :]  # (T, r/2)


def pair_norms(x: np.ndarray, c: RopeCase) -> np.ndarray:
    """|(x_a, x_b)| of each rotated pair (T, H, r/2)."""
    a, b = ref.pair_index(c.D, c.r, c.style)
    return np.hypot(x[..., a], x[..., b])


def budget(dtype: str, x: np.ndarray, pos: np.ndarray, c: RopeCase) -> float:
    """Normwise budget of rope(x, pos) against float64: the dtype's rounding of a two-term sum
    plus ||pair norm × phase_bound|| / ||x||."""
    phase = pair_norms(x, c) * phase_bound(pos, c)[:, None, :]  # (T, H, r/2)
    return floor(dtype, 2) + float(np.linalg.norm(phase)) / max(float(np.linalg.norm(x)), TINY)


def call_text(c: RopeCase, pos: Any) -> str:
    return f"rope(x({c.T},{c.H},{c.D}), positions={np.asarray(pos).tolist()}, {c.options})"


@clause(
    "ROPE-REF",
    "rope equals the float64 reference (both styles, partial rotary dims, head dims 64-256, "
    "positions up to 131,072) within the dtype's rounding plus a float32 phase's error: a phase "
    "in bf16 or fp16 fails",
    needs=("rope",),
)
def rope_ref(t: Target, data: st.DataObject) -> None:
    against_reference(t, data, data.draw(rope_cases(), label="case"))


def against_reference(t: Target, data: st.DataObject, c: RopeCase) -> None:
    """rope on drawn positions equals the float64 reference within `budget`."""
    __tracebackhide__ = True
    pos = np.array(data.draw(positions(c.T), label="positions"), np.int64)  # (T,)
    x = draw_x(t, data, c)
    out = call_rope(t, x, pos, c)
    assert_close(
        out,
        ref.rope(x, pos, **c.options),
        dtype=t.dtype,
        n=2,
        tol=budget(t.dtype, x, pos, c),
        what=t.where(call_text(c, pos)),
    )


@clause(
    "ROPE-RELATIVE",
    "logits depend only on distance: <rope(q, m+s), rope(k, n+s)> = <rope(q, m), rope(k, n)> "
    "for shifts up to 131,072 (a phase error growing with position or a wrapping cache fails)",
    needs=("rope",),
)
def rope_relative(t: Target, data: st.DataObject) -> None:
    c = data.draw(rope_cases(max_T=3), label="case")
    Tk = data.draw(st.integers(1, 3), label="keys")
    near = st.one_of(st.sampled_from([4095, 0, 1, 2048]), st.integers(0, 4096))
    m = data.draw(st.lists(near, min_size=c.T, max_size=c.T), label="query positions")
    n = data.draw(st.lists(near, min_size=Tk, max_size=Tk), label="key positions")
    room = MAX_POSITION - max(m + n)
    s = data.draw(st.one_of(st.sampled_from([room, 4096, 1]), st.integers(0, room)), label="shift")
    x = draw_x(t, data, c, c.T + Tk)  # (Tq + Tk, H, D): queries then keys
    p0 = np.array(m + n, np.int64)  # (Tq + Tk,)
    before, after = call_rope(t, x, p0, c), call_rope(t, x, p0 + s, c)

    def logits(y: np.ndarray) -> np.ndarray:
        return np.einsum("ihd,jhd->hij", y[: c.T], y[c.T :])  # (H, Tq, Tk)

    norms, pairs = np.linalg.norm(x, axis=-1), pair_norms(x, c)  # (T, H), (T, H, r/2)
    # |change| <= sum over pairs of |q_i||k_i| (phase bounds of both tokens in both calls)
    # plus both calls' rounding of q and k.
    phase = phase_bound(p0, c) + phase_bound(p0 + s, c)  # (T, r/2)
    err_pairs = pairs * phase[:, None, :]  # (T, H, r/2)
    bound = np.einsum("ihr,jhr->hij", err_pairs[: c.T], pairs[c.T :]) + np.einsum(
        "ihr,jhr->hij", pairs[: c.T], err_pairs[c.T :]
    )  # (H, Tq, Tk)
    sizes = np.einsum("ih,jh->hij", norms[: c.T], norms[c.T :])  # (H, Tq, Tk)
    bound += 4 * floor(t.dtype, 2) * sizes
    expected = logits(before)
    magnitude = float(np.linalg.norm(sizes))
    assert_close(
        logits(after),
        expected,
        dtype=t.dtype,
        n=2,
        tol=float(np.linalg.norm(bound)) / max(float(np.linalg.norm(expected)), magnitude, TINY),
        magnitude=magnitude,
        what=t.where(
            f"<q, k> after {call_text(c, p0)} and after the same with positions + {s}: "
            f"query positions {m}, key positions {n}"
        ),
    )


@clause(
    "ROPE-NORM",
    "every rotated pair keeps its norm and the dims past rotary_dim come back unchanged",
    needs=("rope",),
)
def rope_norm(t: Target, data: st.DataObject) -> None:
    c = data.draw(rope_cases(), label="case")
    pos = np.array(data.draw(positions(c.T), label="positions"), np.int64)  # (T,)
    x = draw_x(t, data, c)
    out = call_rope(t, x, pos, c)
    what = t.where(call_text(c, pos))
    if not np.array_equal(out[..., c.r :], x[..., c.r :]):
        raise_changed(out, x, c.r, what)
    size = float(np.linalg.norm(x))
    assert_close(
        pair_norms(out, c),
        pair_norms(x, c),
        dtype=t.dtype,
        n=2,
        tol=2 * floor(t.dtype, 2),
        magnitude=size,
        what=f"the norms of the rotated pairs of {what}",
    )


def raise_changed(out: np.ndarray, x: np.ndarray, r: int, what: str) -> None:
    """Fail naming the first pass-through element rope changed."""
    where = tuple(int(i) for i in np.argwhere(out[..., r:] != x[..., r:])[0])
    idx = (*where[:-1], where[-1] + r)
    raise ClauseFailure(
        f"dim {idx[-1]} lies past rotary_dim {r} but changed: got {out[idx]:.6g}, "
        f"went in as {x[idx]:.6g} (index {idx})\n  in {what}",
        misbehaviour="pass-through dims changed",
        call=what,
        index=list(idx),
    )


@st.composite
def packed_batches(draw: st.DrawFn) -> list[list[int]]:
    """2-4 sequences' positions: a decode token anywhere, a chunk of consecutive positions at
    its sequence's offset, or one position given to several tokens (parallel sampling)."""
    found = []
    for _ in range(draw(st.integers(2, 4), label="sequences")):
        kind = draw(st.sampled_from(["chunk", "decode", "repeated"]), label="kind")
        start = draw(
            st.one_of(st.sampled_from(POSITIONS), st.integers(0, MAX_POSITION)), label="offset"
        )
        start = min(start, MAX_POSITION - 4)
        n = draw(st.integers(2, 5), label="tokens") if kind != "decode" else 1
        found.append([start + i for i in range(n)] if kind == "chunk" else [start] * n)
    return found


@clause(
    "ROPE-POSITIONS",
    "a shuffled packed batch (decode tokens, chunks at their offsets, repeated positions) "
    "equals each sequence rotated alone",
    needs=("rope",),
)
def rope_positions(t: Target, data: st.DataObject) -> None:
    c = data.draw(rope_cases(max_T=1), label="case")
    seqs = data.draw(packed_batches(), label="sequences' positions")
    pos = np.array([p for s in seqs for p in s], np.int64)  # (T,)
    x = draw_x(t, data, c, len(pos))  # (T, H, D)
    order = np.random.default_rng(data.draw(seeds(), label="shuffle")).permutation(len(pos))
    packed = np.empty_like(x)  # (T, H, D), in the batch's own order again
    packed[order] = call_rope(t, x[order], pos[order], c)
    start = 0
    for b, s in enumerate(seqs):
        rows = slice(start, start + len(s))
        start += len(s)
        alone = call_rope(t, x[rows], pos[rows], c)
        assert_close(
            packed[rows],
            alone,
            dtype=t.dtype,
            n=2,
            tol=2 * budget(t.dtype, x[rows], pos[rows], c),
            what=t.where(
                f"sequence {b} (positions {s}) of a shuffled packed batch with positions "
                f"{pos[order].tolist()} against that sequence alone; {c.options}"
            ),
        )


def to_neox(x: np.ndarray, r: int) -> np.ndarray:
    """The documented permutation: gptj's dims (0, 1, 2, 3, ...) of the first r go to neox's
    (0, r/2, 1, r/2 + 1, ...), so that gptj's pair (2i, 2i+1) lands on neox's (i, i + r/2)."""
    return np.concatenate([x[..., 0:r:2], x[..., 1:r:2], x[..., r:]], axis=-1)


@clause(
    "ROPE-STYLES",
    "neox pairs dim i with i + r/2 and gptj 2i with 2i + 1, and rope(x, gptj) = "
    "P⁻¹ rope(P x, neox) for that permutation P",
    needs=("rope",),
)
def rope_styles(t: Target, data: st.DataObject) -> None:
    c = data.draw(rope_cases(min_r=8), label="case")
    p = data.draw(st.one_of(st.sampled_from([4097, 1]), st.integers(1, MAX_POSITION)), label="p")
    eye = np.zeros((c.r, 1, c.D))  # (r, 1, D): token j is the unit vector of dim j
    eye[np.arange(c.r), 0, np.arange(c.r)] = 1.0
    for style in ref.STYLES:
        probe = RopeCase(c.r, 1, c.D, c.rotary_dim, style, c.base, c.scaling)
        out = call_rope(t, eye, np.full(c.r, p), probe)[:, 0]  # (r, D)
        a, b = ref.pair_index(c.D, c.r, style)
        partner = np.arange(c.r)
        partner[a], partner[b] = b, a
        stray = out.copy()
        stray[np.arange(c.r), np.arange(c.r)] = 0.0
        stray[np.arange(c.r), partner] = 0.0
        assert_close(
            stray,
            np.zeros_like(stray),
            dtype=t.dtype,
            n=2,
            tol=floor(t.dtype, 2),
            magnitude=math.sqrt(c.r),
            what=t.where(
                f"what leaves the pairs of rope(one-hot x({c.r},1,{c.D}), positions={p}, "
                f"{probe.options}): {style} turns dims {a[:2].tolist()}... "
                f"with {b[:2].tolist()}... only"
            ),
        )
    pos = np.array(data.draw(positions(c.T), label="positions"), np.int64)  # (T,)
    x = draw_x(t, data, c)
    gptj = call_rope(t, x, pos, c, style="gptj")
    neox = call_rope(t, to_neox(x, c.r), pos, c, style="neox")
    assert_close(
        to_neox(gptj, c.r),
        neox,
        dtype=t.dtype,
        n=2,
        tol=2
        * budget(t.dtype, x, pos, RopeCase(c.T, c.H, c.D, c.rotary_dim, "gptj", c.base, c.scaling)),
        what=t.where(f"P {call_text(c, pos)} with style gptj against the same on P x with neox"),
    )


@clause(
    "ROPE-SCALING",
    "('linear', f) and Llama 3's ('llama3', factor, low, high, L) equal the reference at the "
    "published scaled frequencies (Llama 3.1, 3.2 and other settings)",
    needs=("rope",),
)
def rope_scaling(t: Target, data: st.DataObject) -> None:
    against_reference(t, data, data.draw(rope_cases(scaled=True), label="case"))
