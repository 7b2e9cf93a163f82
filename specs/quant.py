"""Quantized KV-cache clauses: fp8 (e4m3, e5m2) and int8 pages with scales, on every read path.

`paged_kv_cache(..., kv_dtype=..., k_scale=..., v_scale=...)` makes a pool whose k_pages and
v_pages hold codes in the storage type (a float per tensor, or one scale per KV head); a write
stores saturate(round(x / scale)) and every read means code × scale (attnspec.specs.reference.quant). An
implementation declares the "kv_quant" option (and may limit the storage types with
`limits = {"kv_dtypes": (...)}`); without it these clauses skip, naming the option.

Data is drawn at the scale's own size (x ≈ scale × max / 4, queries ≈ 1 / x, so logits stay
near 1 whatever the scale): a scale forgotten or applied to the wrong head moves the logits or
the values by the scale itself. Scales are drawn far from 1 (1e-3, 30, 2^-10, 32) or between.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from hypothesis import strategies as st

from attnspec.specs import limits
from attnspec.specs.clauses import clause
from attnspec.specs.cost_clauses import exact
from attnspec.specs.cost_counted import mismatch as cost_mismatch
from attnspec.specs.merge import Packed, check_packed, merge, with_lse
from attnspec.specs.paged import pages
from attnspec.specs.paged_layouts import (
    Heads,
    Layout,
    block_sizes,
    blocks_for,
    layouts,
    takes_v_head_dim,
)
from attnspec.specs.reference import quant as ref
from attnspec.specs.reference.serving import sequence_attention, sequence_magnitude
from attnspec.specs.runner import Target
from attnspec.specs.strategies import normal, scales, seeds
from attnspec.specs.tolerance import ClauseFailure, budget, normwise_error
from attnspec.specs.varlen import draw_options, index, require_option, serve, supported

FAR_SCALES = (1e-3, 30.0, 2.0**-10, 32.0)  # far from 1; the powers of two keep exact ties
SCALE_KINDS = ("per head", "per tensor")
FINITE = {"float64": 1e300, "float32": 3e38, "bfloat16": 3e38, "float16": 65504.0}
OUTLIER = 1e6  # an activation outlier (float16: its largest finite values instead)
DIVISION_ULPS = 2.0**-22  # x / scale computed in float32 may move a near-tie to its neighbour
PATHS = ("direct", "lse", "merge")  # how EQ-DEQUANT reads the cache


@dataclass(frozen=True)
class Quant:
    """A storage type and the K and V scales (Hkv,) (all equal when per tensor)."""

    kv_dtype: str
    per_head: bool
    k_scale: np.ndarray
    v_scale: np.ndarray

    def scale(self, which: str) -> float | np.ndarray:
        """The k or v scale as the contract passes it: a float, or (Hkv,)."""
        s = self.k_scale if which == "k" else self.v_scale
        return s if self.per_head else float(s[0])

    def kwargs(self, t: Target) -> dict[str, Any]:
        """paged_kv_cache's keywords: per-head scales as the implementation's float32 arrays."""
        out: dict[str, Any] = {"kv_dtype": self.kv_dtype}
        for which in ("k", "v"):
            s = self.scale(which)
            out[f"{which}_scale"] = t.native(np.asarray(s), "float32") if self.per_head else s
        return out

    def text(self) -> str:
        k, v = (np.asarray(self.scale(w)).tolist() for w in ("k", "v"))
        return f"kv_dtype={self.kv_dtype!r}, k_scale={k}, v_scale={v}"


def kv_dtypes() -> tuple[str, ...]:
    """The storage types the implementation declares (limits "kv_dtypes"), else all three."""
    return limits.current().kv_dtypes or ref.KV_DTYPES


def f32(x: np.ndarray | float) -> np.ndarray:
    """Scales exactly representable in float32, as float64."""
    return np.asarray(x, np.float32).astype(np.float64)


@st.composite
def quants(draw: st.DrawFn, Hkv: int) -> Quant:
    """A storage type, per-head or per-tensor scales far from 1 (or between), K's and V's apart;
    per head, each head's scale is the base times its own power of 4."""
    kv = draw(st.sampled_from(kv_dtypes()), label="kv_dtype")
    per_head = draw(st.sampled_from(SCALE_KINDS), label="scales") == "per head"
    order = draw(st.permutations(range(Hkv)), label="head scale order") if per_head else [0] * Hkv
    out = []
    for which in ("k", "v"):
        base = draw(st.one_of(st.sampled_from(FAR_SCALES), st.floats(0.01, 10.0)), label=which)
        out.append(f32(base * 4.0 ** np.array(order, np.float64)))
    k, v = out
    if np.array_equal(k, v):
        v = v * 4.0  # k_scale used for V must show
    return Quant(kv, per_head, k, v)


def spread(q: Quant, which: str, dtype: str) -> np.ndarray:
    """(Hkv,) the size of the data of each head: max / 4 on the grid, inside the working dtype."""
    s = q.k_scale if which == "k" else q.v_scale
    return np.minimum(ref.MAX[q.kv_dtype] / 4, FINITE[dtype] / (16 * s)) * s


def kv_data(
    rng: np.random.Generator, n: int, h: Heads, q: Quant, dtype: str
) -> tuple[np.ndarray, np.ndarray]:
    """K (n, Hkv, D) and V (n, Hkv, Dv) at each head's scale."""
    k = normal(rng, (n, h.Hkv, h.D)) * spread(q, "k", dtype)[:, None]
    v = normal(rng, (n, h.Hkv, h.Dv)) * spread(q, "v", dtype)[:, None]
    return k, v


def queries(rng: np.random.Generator, n: int, h: Heads, q: Quant, dtype: str) -> np.ndarray:
    """Queries (n, Hq, D) at 1 / the size of their kv head's keys: logits near 1."""
    size = np.repeat(spread(q, "k", dtype), h.Hq // h.Hkv)  # (Hq,)
    return normal(rng, (n, h.Hq, h.D)) / size[:, None]


def new_qpool(t: Target, num_blocks: int, bs: int, h: Heads, q: Quant) -> Any:
    """The implementation's quantized pool, made through a guarded call."""
    extra: dict[str, Any] = {"v_head_dim": h.Dv} if h.Dv != h.D else {}
    extra.update(q.kwargs(t))
    text = f"paged_kv_cache({num_blocks}, {bs}, {h.Hkv}, {h.D}, {t.dtype!r}, {q.text()})"
    return t.guard(text, t.impl.paged_kv_cache, num_blocks, bs, h.Hkv, h.D, t.dtype, **extra)


def qwrite(t: Target, cache: Any, k: np.ndarray, v: np.ndarray, slots: np.ndarray) -> str:
    """paged_kv_write of k (T, Hkv, D), v (T, Hkv, Dv) to `slots`; returns the call's text."""
    text = f"paged_kv_write(cache, k{k.shape}, v{v.shape}, slot_mapping({len(slots)},))"
    t.guard(text, t.impl.paged_kv_write, cache, t.native(k), t.native(v), index(t, slots))
    return text


def stored(t: Target, cache: Any, q: Quant) -> tuple[np.ndarray, np.ndarray]:
    """The pool's codes (k_pages, v_pages) as float64, each in the storage type it declares."""
    out = []
    for name in ("k_pages", "v_pages"):
        native = pages(t, cache, name)
        kind = str(getattr(native, "dtype", "")).removeprefix("torch.")
        if kind != q.kv_dtype:
            raise ClauseFailure(
                f"cache.{name} is stored as {kind or type(native).__name__}, not {q.kv_dtype}: "
                f"the pool is not quantized\n  in {t.where(q.text())}",
                misbehaviour="wrong dtype",
                call=t.where(q.text()),
            )
        out.append(t.numpy(native, f"cache.{name}"))
    return out[0], out[1]


def require_quant(t: Target) -> None:
    """Skip unless the implementation declares the "kv_quant" option."""
    require_option(t, "kv_quant")


def small_heads(data: st.DataObject, t: Target, *, long: bool = False) -> Heads:
    """Heads where a head-indexing bug shows (2 kv heads, groups of 2 first), small head dims."""
    Hkv = data.draw(st.sampled_from((2, 1) if long else (2, 1, 3)), label="Hkv")
    G = data.draw(st.sampled_from((2, 1) if long else (2, 1, 3, 4)), label="Hq/Hkv")
    D = data.draw(st.sampled_from((4, 8) if long else (16, 8, 1, 17, 64)), label="D")
    Dv = D
    if takes_v_head_dim(t):
        Dv = data.draw(st.sampled_from((D, 8)), label="Dv")
    lim = limits.current()
    return Heads(Hkv * G, Hkv, lim.head_dim(D), lim.head_dim(Dv))


def specials(q: Quant, which: str, dtype: str) -> np.ndarray:
    """(Hkv, n) values where a writer goes wrong: outliers of 1e6 and 2 × max × scale (finite in
    the working dtype), exact ties between grid values, the subnormal range, zeros."""
    s = q.k_scale if which == "k" else q.v_scale
    g = ref.grid(q.kv_dtype)
    mids = (g[:-1] + g[1:]) / 2
    pick = mids[np.linspace(0, mids.size - 1, 9).astype(int)]
    tiny = ref.SMALLEST[q.kv_dtype] * np.array([0.25, 0.5, 1.5, 2.5])
    rows = []
    for sh in s:
        big = [x for x in (OUTLIER, 2 * ref.MAX[q.kv_dtype] * sh) if x < FINITE[dtype] / 2]
        big = big or [FINITE[dtype] / 2]
        ties = pick[np.abs(pick * sh) < FINITE[dtype] / 2] * sh  # finite in the working dtype
        rows.append(np.concatenate([[0.0, -0.0], big, [-b for b in big], ties, tiny * sh]))
    width = max(len(r) for r in rows)
    return np.stack([np.resize(r, width) for r in rows])  # (Hkv, n)


def with_specials(rng: np.random.Generator, x: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """x (T, Hkv, D) with the (Hkv, n) special values scattered over each head's entries."""
    out = x.copy()
    T, Hkv, D = x.shape
    for h in range(Hkv):
        flat = out[:, h].reshape(-1)
        where = rng.choice(flat.size, min(flat.size, extra.shape[1]), replace=False)
        flat[where] = extra[h, : where.size]
        out[:, h] = flat.reshape(T, D)
    return out


def check_codes(
    t: Target,
    got: np.ndarray,
    want_x: np.ndarray,
    q: Quant,
    which: str,
    slots: np.ndarray,
    text: str,
) -> None:
    """Codes read at `slots` (T, Hkv, D) against saturate(round(x / scale)) of the written x,
    allowing only the neighbour a float32 division can reach at a near-tie."""
    __tracebackhide__ = True
    s = q.k_scale if which == "k" else q.v_scale
    y = want_x / s[:, None]
    a = ref.round_to_grid(y * (1 - DIVISION_ULPS), q.kv_dtype)
    b = ref.round_to_grid(y * (1 + DIVISION_ULPS), q.kv_dtype)
    ok = (got >= np.minimum(a, b)) & (got <= np.maximum(a, b))
    if ok.all():
        return
    i = tuple(int(j) for j in np.argwhere(~ok)[0])
    want = ref.round_to_grid(y[i], q.kv_dtype)
    kind = "NaN/Inf" if not np.isfinite(got[i]) else "wrong result"
    raise ClauseFailure(
        f"{which}_pages at slot {int(slots[i[0]])}, head {i[1]}, dim {i[2]} holds {got[i]:.6g} for "
        f"x = {want_x[i]:.6g} (x / scale = {y[i]:.6g}): expected saturate(round-to-nearest-even) "
        f"= {float(want):.6g} ({int((~ok).sum())} wrong codes)\n  in {t.where(text)} ({q.text()})",
        misbehaviour=kind,
        index=list(i),
        call=t.where(text),
    )


@clause(
    "QKV-WRITE-ROUNDS",
    "paged_kv_write into an fp8 (e4m3, e5m2) or int8 pool stores round-to-nearest-even of "
    "x / scale on the type's grid, saturating at ±448, ±57344, ±127 (never NaN or Inf for finite "
    "input, outliers of 1e6 included), per tensor or per KV head, in pages of that type; slots "
    "of -1 are skipped and nothing else in the pool changes",
    needs=("paged_kv_cache", "paged_kv_write"),
)
def qkv_write_rounds(t: Target, data: st.DataObject) -> None:
    require_quant(t)
    h = small_heads(data, t)
    q = data.draw(quants(h.Hkv), label="quantization")
    bs = data.draw(block_sizes((16, 1, 4), odd=False), label="block_size")
    num_blocks = data.draw(st.integers(1, max(2, 64 // bs)), label="num_blocks")
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    cache = new_qpool(t, num_blocks, bs, h, q)
    k_pool, v_pool = stored(t, cache, q)  # as made; only written slots may change
    capacity = num_blocks * bs
    for step in range(2):
        if step == 0:
            slots = rng.permutation(capacity)
        else:
            chosen = rng.permutation(capacity)[
                : data.draw(st.integers(1, capacity), label="tokens")
            ]
            pads = data.draw(st.integers(0, 3), label="padding slots (-1)")
            slots = rng.permutation(np.concatenate([chosen, -np.ones(pads, np.int64)]))
        k, v = kv_data(rng, slots.size, h, q, t.dtype)
        k = with_specials(rng, k, specials(q, "k", t.dtype))
        v = with_specials(rng, v, specials(q, "v", t.dtype))
        k, v = t.inputs(k, v)
        text = qwrite(t, cache, k, v, slots)
        keep = slots >= 0
        got_k, got_v = stored(t, cache, q)
        for name, got, before, x in (("k", got_k, k_pool, k), ("v", got_v, v_pool, v)):
            flat, old = (
                got.reshape(capacity, *got.shape[2:]),
                before.reshape(capacity, *got.shape[2:]),
            )
            untouched = np.setdiff1d(np.arange(capacity), slots[keep])
            if not np.array_equal(flat[untouched], old[untouched], equal_nan=True):
                moved = untouched[
                    np.flatnonzero((flat[untouched] != old[untouched]).any(axis=(1, 2)))
                ]
                raise ClauseFailure(
                    f"{name}_pages changed at slot {int(moved[0])}, which no token was mapped to "
                    f"({moved.size} such slots; slots {slots.tolist()[:12]}...)\n  in {t.where(text)}",
                    misbehaviour="wrong result",
                    call=t.where(text),
                )
            check_codes(t, flat[slots[keep]], x[keep], q, name, slots[keep], text)
        k_pool, v_pool = got_k, got_v


def fill_quant(
    t: Target, data: st.DataObject, lay: Layout, h: Heads, q: Quant
) -> tuple[Any, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """A quantized pool with every slot of blocks lay.base.. written, then each sequence's keys
    and values through its table (sequence 1 reuses sequence 0's shared prefix blocks). Returns
    the pool, packed queries and each sequence's dequantized K and V as the pool holds them."""
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    cache = new_qpool(t, lay.num_blocks, lay.bs, h, q)
    every = lay.base * lay.bs + rng.permutation((lay.num_blocks - lay.base) * lay.bs)
    k0, v0 = t.inputs(*kv_data(rng, every.size, h, q, t.dtype))
    qwrite(t, cache, k0, v0, every)
    for b, n in enumerate(lay.seq_lens):
        start = lay.shared * lay.bs if b == 1 else 0  # the common prefix is already there
        kb, vb = t.inputs(*kv_data(rng, n - start, h, q, t.dtype))
        pos = np.arange(start, n)
        qwrite(t, cache, kb, vb, lay.table[b, pos // lay.bs] * lay.bs + pos % lay.bs)
    qs = t.inputs(queries(rng, int(lay.q_lens.sum()), h, q, t.dtype))[0]  # (total_q, Hq, D)
    k_codes, v_codes = stored(t, cache, q)
    keys, values = [], []
    for b, n in enumerate(lay.seq_lens):
        pos = np.arange(n)
        blocks, offs = lay.table[b, pos // lay.bs], pos % lay.bs
        keys.append(ref.dequantize(k_codes[blocks, offs], q.k_scale))  # (n, Hkv, D)
        values.append(ref.dequantize(v_codes[blocks, offs], q.v_scale))  # (n, Hkv, Dv)
    return cache, qs, keys, values


def paged_arrays(
    t: Target, table: np.ndarray, seq_lens: np.ndarray, cu_q: np.ndarray
) -> dict[str, Any]:
    """paged_attention's index arrays, native."""
    return {
        "block_table": index(t, table),
        "seq_lens": index(t, seq_lens),
        "cu_seqlens_q": index(t, cu_q),
    }


def merge_split(lay: Layout) -> np.ndarray | None:
    """Prefix lengths (B,) at a block boundary that every query sees (so a non-causal call over
    the prefix and a causal one over the rest cover each sequence once), else None."""
    cut = []
    for n, m in zip(lay.seq_lens, lay.q_lens, strict=True):
        p = ((int(n) - int(m)) // lay.bs) * lay.bs
        if m and (p == 0 or p == n):
            return None
        cut.append(p if m else 0)
    return np.array(cut)


def read_merged(
    t: Target,
    cache: Any,
    qs: np.ndarray,
    lay: Layout,
    cut: np.ndarray,
    opts: dict[str, Any],
    Dv: int,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Attention over each sequence's prefix (non-causal) and suffix (causal) of the quantized
    pool with return_lse, merged by merge_attention_states: (o, lse, the calls)."""
    total, Hq = qs.shape[:2]
    watch = (pages(t, cache, "k_pages"), pages(t, cache, "v_pages"))
    parts = []
    shift = cut // lay.bs  # (B,) table columns of the prefix
    suffix = np.stack([np.roll(row, -int(s)) for row, s in zip(lay.table, shift, strict=True)])
    for causal, table, lens in ((False, lay.table, cut), (True, suffix, lay.seq_lens - cut)):
        arrays = paged_arrays(t, table, lens, lay.cu_q)
        o, lse, text = with_lse(
            t, "paged_attention", t.native(qs), cache, o_shape=(total, Hq, Dv),
            lse_shape=(total, Hq), watch=(*arrays.values(), *watch), causal=causal, **arrays, **opts,
        )  # fmt: skip
        parts.append((o, lse))
    o, lse, text = merge(t, parts[0], parts[1])
    return o, lse, text


@clause(
    "QKV-EQ-DEQUANT",
    "paged attention over an fp8 or int8 pool equals float64 attention over the dequantized "
    "cache (the codes it stores × scale) within the ordinary budget, on every read path: decode, "
    "chunked prefill, shared-prefix blocks, window, soft-cap, a sequence past 1024 keys, with "
    "return_lse and merged prefix/suffix states where declared, per-tensor and per-head scales "
    "far from 1 (1e-3, 30)",
    needs=("paged_kv_cache", "paged_kv_write", "paged_attention"),
    examples=0.6,
)
def qkv_eq_dequant(t: Target, data: st.DataObject) -> None:
    require_quant(t)
    kind = data.draw(st.sampled_from(("long sequence", "small", "small")), label="layout kind")
    h = small_heads(data, t, long=kind != "small")
    q = data.draw(quants(h.Hkv), label="quantization")
    lay = data.draw(layouts(h=h, kind=kind), label="layout")
    paths = ["direct"]
    if "lse" in supported(t):
        paths.append("lse")
        if (
            t.has("merge_attention_states")
            and "paged_attention" not in limits.current().causal_only
        ):
            paths.append("merge")
    path = data.draw(st.sampled_from(paths), label="read path")
    longest = int(lay.seq_lens.max())
    opts = draw_options(t, data, longest, causal=True, prefer=kind != "small")
    cut = merge_split(lay) if path == "merge" else None
    if path == "merge" and cut is None:
        path = "lse"  # no block boundary every query sees: read it in one call
    if path == "merge":
        opts.pop("window", None)  # a window would cut into the prefix call
    cache, qs, keys, values = fill_quant(t, data, lay, h, q)
    what = (
        f"paged_attention over a quantized pool ({q.text()}; block_size={lay.bs}, "
        f"seq_lens={lay.seq_lens.tolist()}, new tokens={lay.q_lens.tolist()}, shared prefix "
        f"blocks={lay.shared}, Dv={h.Dv}, {opts}, read {path})"
    )
    arrays = paged_arrays(t, lay.table, lay.seq_lens, lay.cu_q)
    watch = (pages(t, cache, "k_pages"), pages(t, cache, "v_pages"))
    shape = (qs.shape[0], h.Hq, h.Dv)
    lse = None
    if path == "direct":
        o = serve(t, "paged_attention", t.native(qs), cache, arrays=arrays,
                  plain={"causal": True, **opts}, expect_shape=shape, watch=watch)  # fmt: skip
    elif path == "lse":
        o, lse, _ = with_lse(
            t, "paged_attention", t.native(qs), cache, o_shape=shape, lse_shape=shape[:2],
            watch=(*arrays.values(), *watch), causal=True, **arrays, **opts,
        )  # fmt: skip
    else:
        o, lse, _ = read_merged(t, cache, qs, lay, np.asarray(cut), opts, h.Dv)
    check_packed(t, Packed(qs, lay.cu_q, keys, values, True, opts), o, lse, what)


def error_bound(qb: np.ndarray, kb: np.ndarray, vb: np.ndarray, q: Quant, sc: float) -> np.ndarray:
    """(Tq, Hq, Dv) how far causal attention over K, V quantized to half a grid step may move:
    with Δ = sc · Σ_d |q_d| · step(k_d) the largest logit change (soft-cap is 1-Lipschitz), each
    weight moves by a factor within e^±2Δ, so |o' - o| <= e^2Δ Σ p |δv| + (e^2Δ - 1) Σ p |v - o|."""
    Tq, Hq, _ = qb.shape
    G = Hq // kb.shape[1]
    dk = np.repeat(ref.half_step(kb, q.kv_dtype, q.k_scale), G, axis=1)  # (Tk, Hq, D)
    dv = np.repeat(ref.half_step(vb, q.kv_dtype, q.v_scale), G, axis=1)  # (Tk, Hq, Dv)
    kk, vv = np.repeat(kb, G, axis=1), np.repeat(vb, G, axis=1)
    s = np.einsum("qhd,khd->hqk", qb, kk) * sc  # (Hq, Tq, Tk)
    Tk = kb.shape[0]
    seen = np.arange(Tk)[None, :] <= np.arange(Tq)[:, None] + (Tk - Tq)  # (Tq, Tk)
    s = np.where(seen, s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)  # (Hq, Tq, Tk)
    delta = sc * np.einsum("qhd,khd->hqk", np.abs(qb), dk)  # (Hq, Tq, Tk)
    grow = np.exp(2 * np.where(seen, delta, 0.0).max(axis=-1))[..., None]  # (Hq, Tq, 1)
    o = np.einsum("hqk,khd->hqd", p, vv)
    spread_ = np.einsum("hqk,hqkd->hqd", p, np.abs(vv.transpose(1, 0, 2)[:, None] - o[:, :, None]))
    bound = grow * np.einsum("hqk,khd->hqd", p, dv) + (grow - 1) * spread_
    return bound.transpose(1, 0, 2)  # (Tq, Hq, Dv)


@st.composite
def short_layouts(draw: st.DrawFn) -> Layout:
    """1..3 sequences of few keys (a single key first: the output is then its value), decode or a
    short chunk, in shuffled blocks."""
    bs = draw(block_sizes((1, 16, 4), odd=False), label="block_size")
    B = draw(st.integers(1, 3), label="sequences")
    lens = [draw(st.sampled_from((1, 2, 3, 9, 40)), label="seq_len") for _ in range(B)]
    q_lens = [draw(st.sampled_from((1, min(n, 4))), label="new tokens") for n in lens]
    need = [blocks_for(n, bs) for n in lens]
    rng = np.random.default_rng(draw(seeds(), label="block shuffle seed"))
    order = list(rng.permutation(sum(need)))
    table = np.zeros((B, max(need)), np.int64)
    for b, n in enumerate(need):
        table[b, :n] = [order.pop() for _ in range(n)]
    owned = np.ones(sum(need), bool)
    return Layout(bs, sum(need), np.array(lens), np.array(q_lens), table, owned, 0)


@clause(
    "QKV-ERROR-MODEL",
    "paged attention over an fp8 or int8 pool with amax-calibrated scales differs from "
    "attention over the unquantized keys and values by at most the derived quantization "
    "budget (half a grid step per element: 2^-(m+1) of its size for fp8, scale/2 for int8, propagated "
    "through the softmax as e^2Δ and through the weighted sum) plus the ordinary budget, so a "
    "coarser grid than the declared one fails",
    needs=("paged_kv_cache", "paged_kv_write", "paged_attention"),
)
def qkv_error_model(t: Target, data: st.DataObject) -> None:
    require_quant(t)
    h = small_heads(data, t)
    lay = data.draw(short_layouts(), label="layout")
    kv = data.draw(st.sampled_from(kv_dtypes()), label="kv_dtype")
    per_head = data.draw(st.sampled_from(SCALE_KINDS), label="scales") == "per head"
    size = data.draw(st.sampled_from((1.0, 1e-3, 30.0)), label="data size")
    size = min(size, FINITE[t.dtype] / 1e3)
    sc = data.draw(scales(), label="scale") or 1 / np.sqrt(h.D)
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    keys, values = [], []
    for n in lay.seq_lens:
        kb, vb = t.inputs(normal(rng, (n, h.Hkv, h.D), size), normal(rng, (n, h.Hkv, h.Dv), size))
        keys.append(kb)
        values.append(vb)
    amax = [  # (Hkv,) each: the largest |x| maps to the type's max (within float32 rounding)
        np.broadcast_to(
            np.max(np.abs(np.concatenate(xs)), axis=(0, 2) if per_head else None), h.Hkv
        )
        for xs in (keys, values)
    ]
    q = Quant(kv, per_head, f32(amax[0] / ref.MAX[kv]), f32(amax[1] / ref.MAX[kv]))
    cache = new_qpool(t, lay.num_blocks, lay.bs, h, q)
    for b, n in enumerate(lay.seq_lens):
        pos = np.arange(n)
        qwrite(t, cache, keys[b], values[b], lay.table[b, pos // lay.bs] * lay.bs + pos % lay.bs)
    qs = t.inputs(normal(rng, (int(lay.q_lens.sum()), h.Hq, h.D), 1 / size))[0]
    arrays = paged_arrays(t, lay.table, lay.seq_lens, lay.cu_q)
    watch = (pages(t, cache, "k_pages"), pages(t, cache, "v_pages"))
    out = serve(t, "paged_attention", t.native(qs), cache, arrays=arrays,
                plain={"causal": True, "scale": sc}, expect_shape=(qs.shape[0], h.Hq, h.Dv),
                watch=watch)  # fmt: skip
    for b, (kb, vb) in enumerate(zip(keys, values, strict=True)):
        rows = slice(int(lay.cu_q[b]), int(lay.cu_q[b + 1]))
        qb = qs[rows]
        exact_o = sequence_attention(qb, kb, vb, causal=True, scale=sc)
        kq = ref.dequantize(ref.quantize(kb, kv, q.k_scale), q.k_scale)
        vq = ref.dequantize(ref.quantize(vb, kv, q.v_scale), q.v_scale)
        deq = sequence_attention(qb, kq, vq, causal=True, scale=sc)
        magnitude = sequence_magnitude(qb, kq, vq, causal=True, scale=sc)
        n = max(h.D, kb.shape[0])
        base = sequence_attention(qb, kq, vq, causal=True, scale=sc, precision=t.dtype)
        tol = budget(t.dtype, n, deq, base, magnitude)
        excess = np.maximum(np.abs(out[rows] - exact_o) - error_bound(qb, kb, vb, q, sc), 0.0)
        err = normwise_error(
            excess, np.zeros_like(excess), max(magnitude, float(np.linalg.norm(deq)))
        )
        if not err <= tol:
            i = tuple(int(j) for j in np.unravel_index(int(np.argmax(excess)), excess.shape))
            where = t.where(
                f"paged_attention over a {kv} pool (scales {'per head' if per_head else 'per tensor'}"
                f" from amax: {q.text()}; sequence {b}, {kb.shape[0]} keys, scale={sc:.4g})"
            )
            raise ClauseFailure(
                f"the error against unquantized attention exceeds the quantization budget by "
                f"{err:.3g} (normwise, allowed {tol:.3g}); worst at {i}: got {out[rows][i]:.6g}, "
                f"unquantized {exact_o[i]:.6g}, budget ±{error_bound(qb, kb, vb, q, sc)[i]:.3g}: "
                f"a coarser grid than {kv}, or a scale lost?\n  in {where}",
                error=err,
                tolerance=tol,
                index=[rows.start + i[0], *i[1:]],
                call=where,
            )


# Llama-3-8B (32 layers, Hq 32, Hkv 8, D 128) at 32768 tokens, B = 1: cache bytes and one
# layer's decode step (q and o in bf16), by hand in docs/cost-model.md.
LLAMA3_8B = {"layers": 32, "Hq": 32, "Hkv": 8, "D": 128, "T": 32768}
HAND = {
    "bf16 cache": 4_294_967_296,
    "fp8 cache, scale per tensor": 2_147_483_904,
    "fp8 cache, scale per head": 2_147_485_696,
    "bf16 decode bytes": 134_234_112,
    "fp8 decode bytes": 67_125_256,
    "decode FLOPs": 536_870_912,
}
HAND_INTENSITY = {"bf16": 3.99951, "fp8": 7.99805}


@clause(
    "COST-QUANT-KV",
    "an 8-bit cache costs kv_cache_bytes at E = 1 plus its scales (4 bytes each, K and V, per "
    "layer, per tensor or per KV head), and a decode step over it reads the cache at E_kv and q, "
    "o at E: Llama-3-8B at 32k tokens holds 4,294,967,296 bytes in bf16 and 2,147,483,904 in "
    "fp8 (per-tensor scales), and one layer's decode intensity rises from 3.9995 to 7.998",
    needs=(
        "quantized_kv_bytes",
        "quantized_decode_cost",
        "kv_cache_bytes",
        "decode_attention_cost",
    ),
)
def cost_quant_kv(t: Target, data: st.DataObject) -> None:
    layers = data.draw(st.integers(1, 96), label="layers")
    B, Hkv = data.draw(st.integers(1, 64), label="B"), data.draw(st.integers(1, 16), label="Hkv")
    G, D = data.draw(st.integers(1, 8), label="Hq/Hkv"), data.draw(st.integers(1, 256), label="D")
    T = data.draw(st.integers(1, 1 << 17), label="T")
    E_kv = data.draw(st.sampled_from([1, 0.5, 2]), label="E_kv")
    E = data.draw(st.sampled_from([2, 4]), label="E")
    nscales = data.draw(st.sampled_from([1, Hkv]), label="scales per tensor")
    Hq = G * Hkv
    got = t.impl.quantized_kv_bytes(layers, B, Hkv, D, T, E_kv, scales=nscales)
    want = t.impl.kv_cache_bytes(layers, B, Hkv, D, T, E_kv) + 2 * layers * nscales * 4
    if got != want:
        raise cost_mismatch(
            t.where(
                f"quantized_kv_bytes({layers}, {B}, {Hkv}, {D}, {T}, {E_kv}, scales={nscales})"
            ),
            got,
            want,
        )
    c = t.impl.quantized_decode_cost(B, Hq, Hkv, T, D, E_kv, E, scales=nscales)
    want_c = (4 * B * Hq * T * D, B * (2 * Hkv * T * D * E_kv + 2 * Hq * D * E) + 2 * nscales * 4)
    if (c.flops, c.bytes) != want_c:
        raise cost_mismatch(
            t.where(f"quantized_decode_cost({B}, {Hq}, {Hkv}, {T}, {D}, {E_kv}, {E})"),
            (c.flops, c.bytes),
            want_c,
        )
    plain = t.impl.decode_attention_cost(B, Hq, Hkv, T, D, E)
    bare = t.impl.quantized_decode_cost(B, Hq, Hkv, T, D, E_kv, E, scales=nscales, scale_bytes=0)
    if E_kv < E and not exact(bare) > exact(plain):
        raise cost_mismatch(
            t.where("decode intensity of an 8-bit cache vs a 16-bit one"),
            c.intensity,
            f"> {plain.intensity}",
        )
    m = LLAMA3_8B
    hand = {
        "bf16 cache": t.impl.kv_cache_bytes(m["layers"], 1, m["Hkv"], m["D"], m["T"], 2),
        "fp8 cache, scale per tensor": t.impl.quantized_kv_bytes(
            m["layers"], 1, m["Hkv"], m["D"], m["T"], 1, scales=1
        ),
        "fp8 cache, scale per head": t.impl.quantized_kv_bytes(
            m["layers"], 1, m["Hkv"], m["D"], m["T"], 1, scales=m["Hkv"]
        ),
    }
    bf16 = t.impl.decode_attention_cost(1, m["Hq"], m["Hkv"], m["T"], m["D"], 2)
    fp8 = t.impl.quantized_decode_cost(1, m["Hq"], m["Hkv"], m["T"], m["D"], 1, 2, scales=1)
    hand.update(
        {"bf16 decode bytes": bf16.bytes, "fp8 decode bytes": fp8.bytes, "decode FLOPs": fp8.flops}
    )
    for name, value in hand.items():
        if value != HAND[name]:
            raise cost_mismatch(t.where(f"Llama-3-8B at 32k tokens: {name}"), value, HAND[name])
    for name, cost in (("bf16", bf16), ("fp8", fp8)):
        if round(float(Fraction(cost.flops) / Fraction(cost.bytes)), 5) != HAND_INTENSITY[name]:
            raise cost_mismatch(
                t.where(f"Llama-3-8B decode intensity, {name} cache"),
                cost.intensity,
                HAND_INTENSITY[name],
            )
