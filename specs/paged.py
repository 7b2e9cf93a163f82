"""Paged KV-cache clauses: a block pool behind a block table (vLLM / flash-attn layout).

The pool holds k_pages (num_blocks, block_size, Hkv, D) and v_pages (..., Hkv, Dv); token t of a
write goes to slot slot_mapping[t] = block * block_size + offset (-1: padding, skipped).
Sequence b's keys are positions 0..seq_lens[b]-1, position j in block
block_table[b, j // block_size] at offset j % block_size; its queries are its newest tokens.
The layouts (shuffled tables, shared prefixes, long sequences, big pools, Dv != D, inside the
declared limits) are drawn in attnspec.specs.paged_layouts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from attnspec.specs.clauses import clause
from attnspec.specs.paged_layouts import (
    BIG_BLOCK_SIZES,
    WIDE_SLOTS,
    Heads,
    Layout,
    big_pool_blocks,
    block_sizes,
    blocks_for,
    heads,
    layout_kinds,
    layouts,
    takes_v_head_dim,
)
from attnspec.specs.reference.serving import sequence_attention, sequence_magnitude
from attnspec.specs.runner import Target
from attnspec.specs.strategies import normal, seeds
from attnspec.specs.tolerance import ClauseFailure, assert_close, budget
from attnspec.specs.varlen import PAST, compare_sequences, draw_options, index, serve

BIG_WRITE = 256  # tokens of one write to a big pool
HUGE = {"float64": 1e300, "float32": 1e30, "bfloat16": 1e30, "float16": 3e4}
POOLS = ("big pool", "small", "small", "small")  # PAGED-WRITE-SLOTS: a big pool first, then 1/4


def new_pool(t: Target, num_blocks: int, bs: int, h: Heads) -> Any:
    """The implementation's pool, made through a guarded call (v_head_dim where Dv != D)."""
    extra = {"v_head_dim": h.Dv} if h.Dv != h.D else {}
    text = f"paged_kv_cache({num_blocks}, {bs}, {h.Hkv}, {h.D}, {t.dtype!r}" + (
        f", v_head_dim={h.Dv})" if extra else ")"
    )
    return t.guard(text, t.impl.paged_kv_cache, num_blocks, bs, h.Hkv, h.D, t.dtype, **extra)


def pages(t: Target, cache: Any, name: str) -> Any:
    """cache.k_pages or cache.v_pages (native), guarded."""
    return t.guard(f"cache.{name}", getattr, cache, name)


def read_pool(
    t: Target, cache: Any, shape: tuple[int, ...], Dv: int
) -> tuple[np.ndarray, np.ndarray]:
    """The whole pool as float64 (k_pages, v_pages), each checked for dtype and shape."""
    shapes = {"k_pages": shape, "v_pages": (*shape[:3], Dv)}
    return tuple(  # type: ignore[return-value]
        t.result(pages(t, cache, name), f"cache.{name}", shapes[name]) for name in shapes
    )


def write(t: Target, cache: Any, k: np.ndarray, v: np.ndarray, slots: np.ndarray) -> str:
    """paged_kv_write of k (T, Hkv, D), v (T, Hkv, Dv) to `slots` (T,); returns the call's text."""
    text = f"paged_kv_write(cache, k{k.shape}, v{v.shape}, slot_mapping({len(slots)},))"
    t.guard(text, t.impl.paged_kv_write, cache, t.native(k), t.native(v), index(t, slots))
    return text


def slots_of(table_row: np.ndarray, positions: np.ndarray, bs: int) -> np.ndarray:
    """Slots of token positions of a sequence with block table row `table_row`."""
    return table_row[positions // bs] * bs + positions % bs


def attend(
    t: Target,
    cache: Any,
    q: np.ndarray,
    *,
    table: np.ndarray,
    seq_lens: np.ndarray,
    cu_q: np.ndarray,
    opts: dict[str, Any],
    Dv: int,
) -> np.ndarray:
    """The implementation's paged_attention output (total_q, Hq, Dv); the pool must not change."""
    return serve(
        t,
        "paged_attention",
        t.native(q),
        cache,
        arrays={
            "block_table": index(t, table),
            "seq_lens": index(t, seq_lens),
            "cu_seqlens_q": index(t, cu_q),
        },
        plain={"causal": True, **opts},
        expect_shape=(q.shape[0], q.shape[1], Dv),
        watch=(pages(t, cache, "k_pages"), pages(t, cache, "v_pages")),
    )


def fill(
    t: Target, data: st.DataObject, lay: Layout, h: Heads
) -> tuple[Any, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """A pool with every slot of blocks lay.base.. written (normal values; a big pool's other
    blocks stay as made), then each sequence's keys and values written through its table.
    Returns the pool, packed new queries and each sequence's K (T, Hkv, D) and V (T, Hkv, Dv)."""
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    cache = new_pool(t, lay.num_blocks, lay.bs, h)
    every = lay.base * lay.bs + rng.permutation((lay.num_blocks - lay.base) * lay.bs)  # shuffled
    k0, v0 = t.inputs(normal(rng, (every.size, h.Hkv, h.D)), normal(rng, (every.size, h.Hkv, h.Dv)))
    write(t, cache, k0, v0, every)
    keys: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for b, n in enumerate(lay.seq_lens):
        kb, vb = t.inputs(normal(rng, (n, h.Hkv, h.D)), normal(rng, (n, h.Hkv, h.Dv)))
        start = 0
        if b == 1 and lay.shared:  # the common prefix is already in the pool
            start = lay.shared * lay.bs
            kb[:start], vb[:start] = keys[0][:start], values[0][:start]
        pos = np.arange(start, n)
        write(t, cache, kb[start:], vb[start:], slots_of(lay.table[b], pos, lay.bs))
        keys.append(kb)
        values.append(vb)
    q = t.inputs(normal(rng, (int(lay.q_lens.sum()), h.Hq, h.D)))[0]  # (total_q, Hq, D)
    return cache, q, keys, values


@clause(
    "PAGED-WRITE-SLOTS",
    "paged_kv_write puts token t at slot slot_mapping[t] (block × block_size + offset) in "
    "k_pages and v_pages, skips slots of -1, and changes nothing else in the pool, in pools "
    "past 65536 slots too",
    needs=("paged_kv_cache", "paged_kv_write"),
)
def paged_write_slots(t: Target, data: st.DataObject) -> None:
    big = data.draw(st.sampled_from(POOLS), label="pool") == "big pool"
    h = data.draw(heads(dv=takes_v_head_dim(t), small=big), label="heads")
    if big:
        bs = data.draw(block_sizes(BIG_BLOCK_SIZES, odd=False), label="block_size")
        past_slots = -(-(WIDE_SLOTS + 1) // bs)  # only past 65536 slots when ids can't pass too
        num_blocks = big_pool_blocks(bs, h, 1, fallback=past_slots)
        num_blocks += data.draw(st.integers(0, 3), label="more blocks")
    else:
        bs = data.draw(block_sizes(), label="block_size")
        num_blocks = data.draw(st.integers(1, max(2, 600 // bs)), label="num_blocks")
    shape = (num_blocks, bs, h.Hkv, h.D)
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    cache = new_pool(t, num_blocks, bs, h)
    k_pool, v_pool = np.zeros(shape), np.zeros((*shape[:3], h.Dv))  # what the pool must hold
    capacity = num_blocks * bs
    context = "a write of every slot in shuffled order"
    if big:  # a big pool stays mostly untouched: its top slots (past both wraps) and some others
        context = f"a write of the last {BIG_WRITE // 2} slots and {BIG_WRITE // 2} others"
    for _ in range(2):
        if context.startswith("a write of every"):
            slots = rng.permutation(capacity)
        elif context.startswith("a write of the last"):
            top = np.arange(capacity - BIG_WRITE // 2, capacity)
            others = rng.choice(capacity - top.size, BIG_WRITE // 2, replace=False)
            slots = rng.permutation(np.concatenate([top, others]))
        else:
            most = min(capacity, BIG_WRITE) if big else capacity
            chosen = rng.permutation(capacity)[: data.draw(st.integers(1, most), label="tokens")]
            pads = data.draw(st.integers(0, 3), label="padding slots (-1)")
            slots = rng.permutation(np.concatenate([chosen, -np.ones(pads, np.int64)]))
        k, v = t.inputs(
            normal(rng, (slots.size, h.Hkv, h.D)), normal(rng, (slots.size, h.Hkv, h.Dv))
        )
        text = write(t, cache, k, v, slots)
        keep = slots >= 0
        k_pool.reshape(-1, h.Hkv, h.D)[slots[keep]] = k[keep]
        v_pool.reshape(-1, h.Hkv, h.Dv)[slots[keep]] = v[keep]
        got_pool = read_pool(t, cache, shape, h.Dv)
        for name, got, want in zip(("k_pages", "v_pages"), got_pool, (k_pool, v_pool), strict=True):
            if np.array_equal(got, want):  # the usual case, fast (NaN goes the long way)
                continue
            wrong = ~((got == want) | (np.isnan(got) & np.isnan(want)))
            if wrong.any():
                blk, off, hh, d = (int(i) for i in np.argwhere(wrong)[0])
                slot = blk * bs + off
                written = bool(np.isin(slot, slots[keep]))
                raise ClauseFailure(
                    f"{name}[{blk}, {off}, {hh}, {d}] (slot {slot}) is {got[blk, off, hh, d]:.6g}, "
                    f"expected {want[blk, off, hh, d]:.6g}: "
                    + (
                        "the token mapped to it was not stored there"
                        if written
                        else "no token was mapped to it, yet it changed"
                    )
                    + f" ({int(wrong.sum())} wrong elements; {context}; slots {slots.tolist()[:12]}...)"
                    f"\n  in {t.where(text)}",
                    index=[blk, off, hh, d],
                    call=t.where(text),
                )
        context = "a second write of some slots, with -1 padding"


@clause(
    "PAGED-EQ-DENSE",
    "paged attention equals dense attention over each sequence's gathered keys for shuffled, "
    "non-contiguous and shared (common-prefix) blocks, block sizes 1, 16, 256 and others, "
    "seq_lens that are not multiples of the block size, decode and multi-token chunks, Dv != D, "
    "sequences past 1024 keys and block ids past 32767",
    needs=("paged_kv_cache", "paged_kv_write", "paged_attention"),
)
def paged_eq_dense(t: Target, data: st.DataObject) -> None:
    kind = data.draw(layout_kinds(), label="layout kind")
    h = data.draw(heads(dv=takes_v_head_dim(t), small=kind != "small"), label="heads")
    lay = data.draw(layouts(h=h, kind=kind), label="layout")
    longest = int(lay.seq_lens.max())
    opts = draw_options(t, data, longest, causal=True, prefer=longest > PAST)
    cache, q, keys, values = fill(t, data, lay, h)
    out = attend(
        t, cache, q, table=lay.table, seq_lens=lay.seq_lens, cu_q=lay.cu_q, opts=opts, Dv=h.Dv
    )
    what = (
        f"paged_attention(block_size={lay.bs}, seq_lens={lay.seq_lens.tolist()}, "
        f"new tokens={lay.q_lens.tolist()}, shared prefix blocks={lay.shared}, "
        f"{lay.num_blocks} blocks, Dv={h.Dv}, {opts})"
    )
    compare_sequences(t, out, q, lay.cu_q, keys, values, causal=True, opts=opts, what=what)


def garbage(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """NaN, +-Inf and +-huge values, mixed."""
    kinds = np.array([np.nan, np.inf, -np.inf, HUGE[dtype], -HUGE[dtype]])
    return kinds[rng.integers(0, kinds.size, shape)]


@clause(
    "PAGED-IGNORES-UNOWNED",
    "NaN, Inf or huge values in blocks a sequence does not own (including those its block "
    "table's spare columns point to) and in the slots past its seq_len in its last block never "
    "change its paged attention output",
    needs=("paged_kv_cache", "paged_kv_write", "paged_attention"),
    examples=0.6,  # two attention calls over pools of up to 256-slot blocks
)
def paged_ignores_unowned(t: Target, data: st.DataObject) -> None:
    h = data.draw(heads(dv=takes_v_head_dim(t)), label="heads")
    lay = data.draw(layouts(h=h, share=False), label="layout")
    cache, q, keys, values = fill(t, data, lay, h)
    call: dict[str, Any] = {
        "table": lay.table,
        "seq_lens": lay.seq_lens,
        "cu_q": lay.cu_q,
        "opts": {},
        "Dv": h.Dv,
    }
    before = attend(t, cache, q, **call)
    slots = [np.flatnonzero(np.repeat(~lay.owned, lay.bs))]  # every slot of unowned blocks
    for b, n in enumerate(lay.seq_lens):
        past = np.arange(n, blocks_for(n, lay.bs) * lay.bs)  # the last block's unused slots
        slots.append(slots_of(lay.table[b], past, lay.bs))
    where = np.concatenate(slots)
    rng = np.random.default_rng(data.draw(seeds(), label="garbage seed"))
    if where.size == 0:
        return  # every slot is in use: nothing to poison
    k_bad = garbage(rng, (where.size, h.Hkv, h.D), t.dtype)
    write(t, cache, k_bad, garbage(rng, (where.size, h.Hkv, h.Dv), t.dtype), where)
    after = attend(t, cache, q, **call)
    for b, (kb, vb) in enumerate(zip(keys, values, strict=True)):
        rows = slice(int(lay.cu_q[b]), int(lay.cu_q[b + 1]))
        if rows.stop == rows.start:
            continue
        args = (q[rows], kb, vb)
        expected = sequence_attention(*args, causal=True)
        baseline = sequence_attention(*args, causal=True, precision=t.dtype)
        magnitude = sequence_magnitude(*args, causal=True)
        n = max(h.D, kb.shape[0])
        assert_close(
            after[rows],
            before[rows],
            dtype=t.dtype,
            n=n,
            tol=2 * budget(t.dtype, n, expected, baseline, magnitude),
            magnitude=magnitude,
            what=t.where(
                f"paged_attention(block_size={lay.bs}, seq_lens={lay.seq_lens.tolist()}): "
                f"sequence {b}'s output changed after NaN/Inf/huge values were written to "
                f"{where.size} slots it does not own or past its seq_len"
            ),
        )


@dataclass(frozen=True)
class Request:
    """A sequence in the serving loop: the step it joins, its prompt and how many decodes."""

    join: int
    prompt: int
    decodes: int


@st.composite
def schedules(draw: st.DrawFn) -> list[Request]:
    """2..5 requests; the second joins after the first has left, so it reuses its blocks."""
    n = draw(st.integers(2, 5), label="requests")
    first = Request(
        0, draw(st.integers(1, 12), label="prompt"), draw(st.integers(1, 3), label="decodes")
    )
    second = first.decodes + 1 + draw(st.integers(0, 2), label="second joins after")
    reqs = [first]
    for i in range(1, n):
        join = second if i == 1 else draw(st.integers(0, 6), label="joins at step")
        prompt = draw(st.integers(1, 12), label="prompt")
        reqs.append(Request(join, prompt, draw(st.integers(1, 5), label="decodes")))
    return reqs


@clause(
    "PAGED-DECODE-EQ-RECOMPUTE",
    "a serving loop through the paged cache (sequences join with a prefill chunk, decode one "
    "token per step and leave, their blocks freed and reused by later sequences) gives at every "
    "step each sequence's full causal attention recomputed over its tokens so far",
    needs=("paged_kv_cache", "paged_kv_write", "paged_attention"),
    examples=0.5,
)
def paged_decode_eq_recompute(t: Target, data: st.DataObject) -> None:
    bs = data.draw(block_sizes((1, 2, 3, 4, 16), odd=False), label="block_size")
    h = data.draw(heads(dv=takes_v_head_dim(t)), label="heads")
    reqs = data.draw(schedules(), label="requests")
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    tokens = [r.prompt + r.decodes for r in reqs]
    qkv = [
        t.inputs(*(normal(rng, (n, H, d)) for H, d in ((h.Hq, h.D), (h.Hkv, h.D), (h.Hkv, h.Dv))))
        for n in tokens
    ]  # per request: q (n, Hq, D), k (n, Hkv, D), v (n, Hkv, Dv)
    num_blocks = sum(blocks_for(n, bs) for n in tokens)
    free = [int(i) for i in rng.permutation(num_blocks)]  # LIFO: freed blocks are reused first
    cache = new_pool(t, num_blocks, bs, h)
    owned: dict[int, list[int]] = {}  # request -> its blocks
    length: dict[int, int] = {}  # request -> tokens cached
    step = 0
    while any(length.get(i, 0) < n for i, n in enumerate(tokens)):
        active = sorted({i for i, r in enumerate(reqs) if r.join == step} | set(owned))
        step += 1
        if not active:
            continue
        new = {
            i: (0, reqs[i].prompt) if i not in length else (length[i], length[i] + 1)
            for i in active
        }
        slots, ks, vs, qs = [], [], [], []
        for i in active:
            start, stop = new[i]
            blocks = owned.setdefault(i, [])
            while len(blocks) < blocks_for(stop, bs):
                blocks.append(free.pop())
            slots.append(slots_of(np.array(blocks), np.arange(start, stop), bs))
            qs.append(qkv[i][0][start:stop])
            ks.append(qkv[i][1][start:stop])
            vs.append(qkv[i][2][start:stop])
            length[i] = stop
        write(t, cache, np.concatenate(ks), np.concatenate(vs), np.concatenate(slots))
        width = max(len(owned[i]) for i in active) + 1
        table = rng.integers(0, num_blocks, (len(active), width))  # (B, width)
        for row, i in enumerate(active):
            table[row, : len(owned[i])] = owned[i]
        q = np.concatenate(qs)  # (total_q, Hq, D)
        q_lens = np.array([new[i][1] - new[i][0] for i in active])
        seq_lens = np.array([length[i] for i in active])
        cu_q = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
        out = attend(t, cache, q, table=table, seq_lens=seq_lens, cu_q=cu_q, opts={}, Dv=h.Dv)
        what = (
            f"step {step} of the serving loop (block_size={bs}, requests {reqs}): sequences "
            f"{active} with {seq_lens.tolist()} tokens, {q_lens.tolist()} new"
        )
        keys = [qkv[i][1][: length[i]] for i in active]
        values = [qkv[i][2][: length[i]] for i in active]
        compare_sequences(t, out, q, cu_q, keys, values, causal=True, opts={}, what=what)
        for i in active:
            if length[i] == tokens[i]:
                free.extend(owned.pop(i))
