"""Paged KV-cache clauses: a block pool behind a block table (vLLM / flash-attn layout).

The pool holds k_pages and v_pages (num_blocks, block_size, Hkv, D); token t of a write goes
to slot slot_mapping[t] = block * block_size + offset (-1: padding, skipped). Sequence b's
keys are positions 0..seq_lens[b]-1, position j in block block_table[b, j // block_size] at
offset j % block_size; its queries are its newest tokens. Tables are shuffled (non-contiguous
blocks), may share a prefix block between sequences, and carry extra columns past each
sequence's last block that point anywhere in the pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from specs.clauses import clause
from specs.reference.serving import sequence_attention, sequence_magnitude
from specs.runner import Target
from specs.strategies import normal, seeds
from specs.tolerance import ClauseFailure, assert_close, budget
from specs.varlen import compare_sequences, draw_options, index, serve

BLOCK_SIZES = (1, 16, 256)  # vLLM's 16, flash-attn's 256, and the degenerate 1
HEAD_DIMS = (1, 8, 16, 17, 32, 64)
HUGE = {"float64": 1e300, "float32": 1e30, "bfloat16": 1e30, "float16": 3e4}


@dataclass(frozen=True)
class Heads:
    """Query heads, kv heads and the head dim of one pool (values share the head dim)."""

    Hq: int
    Hkv: int
    D: int


@st.composite
def heads(draw: st.DrawFn) -> Heads:
    Hkv = draw(st.integers(1, 3), label="Hkv")
    G = draw(st.integers(1, 4), label="Hq/Hkv")
    return Heads(Hkv * G, Hkv, draw(st.sampled_from(HEAD_DIMS), label="D"))


def block_sizes() -> st.SearchStrategy[int]:
    """1, 16 and 256, and small sizes that are not powers of two."""
    return st.one_of(st.sampled_from(BLOCK_SIZES), st.integers(2, 7))


def blocks_for(n: int, bs: int) -> int:
    """Blocks that n tokens fill."""
    return -(-n // bs)


def new_pool(t: Target, num_blocks: int, bs: int, h: Heads) -> Any:
    """The implementation's pool, made through a guarded call."""
    text = f"paged_kv_cache({num_blocks}, {bs}, {h.Hkv}, {h.D}, {t.dtype!r})"
    return t.guard(text, t.impl.paged_kv_cache, num_blocks, bs, h.Hkv, h.D, t.dtype)


def pages(t: Target, cache: Any, name: str) -> Any:
    """cache.k_pages or cache.v_pages (native), guarded."""
    return t.guard(f"cache.{name}", getattr, cache, name)


def read_pool(t: Target, cache: Any, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The whole pool as float64 (k_pages, v_pages), each checked for dtype and shape."""
    return tuple(  # type: ignore[return-value]
        t.result(pages(t, cache, name), f"cache.{name}", shape) for name in ("k_pages", "v_pages")
    )


def write(t: Target, cache: Any, k: np.ndarray, v: np.ndarray, slots: np.ndarray) -> str:
    """paged_kv_write of k, v (T, Hkv, D) to `slots` (T,); returns the call's text."""
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


@dataclass
class Layout:
    """Sequences in a pool: lengths, new-token counts, block table and per-sequence K/V."""

    bs: int
    num_blocks: int
    seq_lens: np.ndarray  # (B,)
    q_lens: np.ndarray  # (B,)
    table: np.ndarray  # (B, max_blocks)
    owned: np.ndarray  # (num_blocks,) True where some sequence's tokens live
    shared: int  # blocks sequence 1 shares with sequence 0 (a common prefix)

    @property
    def cu_q(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.q_lens)]).astype(np.int32)  # (B+1,)


@st.composite
def layouts(draw: st.DrawFn, *, share: bool = True) -> Layout:
    """1..4 sequences over a shuffled pool with spare blocks; sequence 1 may share sequence 0's
    first full blocks; table columns past a sequence's blocks hold arbitrary block ids."""
    bs = draw(block_sizes(), label="block_size")
    B = draw(st.integers(1, 4), label="sequences")
    longest = max(40, 2 * bs + bs // 2)
    seq_lens = [draw(st.integers(1, longest), label="seq_len") for _ in range(B)]
    q_lens = []
    for n in seq_lens:
        chunk = st.integers(1, min(n, 16))
        whole = [st.just(n)] if n <= 64 else []
        q_lens.append(draw(st.one_of(st.just(0), st.just(1), chunk, *whole), label="new tokens"))
    if not any(q_lens):
        q_lens[0] = 1
    shared = 0
    if share and B >= 2 and seq_lens[0] >= bs:
        most = min(seq_lens[0] // bs, seq_lens[1] // bs)
        shared = draw(st.integers(0, most), label="shared prefix blocks")
    need = [blocks_for(n, bs) for n in seq_lens]
    spare = draw(st.integers(0, 4), label="spare blocks")
    num_blocks = sum(need) - shared + spare
    rng = np.random.default_rng(draw(seeds(), label="block shuffle seed"))
    free = list(rng.permutation(num_blocks))
    max_blocks = max(need) + draw(st.integers(0, 2), label="extra table columns")
    table = rng.integers(0, num_blocks, (B, max_blocks))  # (B, max_blocks) padding: anything
    owned = np.zeros(num_blocks, bool)
    for b, n in enumerate(need):
        mine = [free.pop() for _ in range(n - (shared if b == 1 else 0))]
        table[b, :n] = [*table[0, :shared], *mine] if b == 1 else mine
        owned[table[b, :n]] = True
    return Layout(bs, num_blocks, np.array(seq_lens), np.array(q_lens), table, owned, shared)


def fill(
    t: Target, data: st.DataObject, lay: Layout, h: Heads
) -> tuple[Any, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """A pool with every slot written (normal values), then each sequence's keys and values
    written through its table. Returns the pool, packed new queries and each sequence's K, V."""
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    cache = new_pool(t, lay.num_blocks, lay.bs, h)
    every = rng.permutation(lay.num_blocks * lay.bs)  # (slots,) in shuffled order
    k0, v0 = t.inputs(normal(rng, (every.size, h.Hkv, h.D)), normal(rng, (every.size, h.Hkv, h.D)))
    write(t, cache, k0, v0, every)
    keys: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for b, n in enumerate(lay.seq_lens):
        kb, vb = t.inputs(normal(rng, (n, h.Hkv, h.D)), normal(rng, (n, h.Hkv, h.D)))
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
    "k_pages and v_pages, skips slots of -1, and changes nothing else in the pool",
    needs=("paged_kv_cache", "paged_kv_write"),
)
def paged_write_slots(t: Target, data: st.DataObject) -> None:
    bs = data.draw(block_sizes(), label="block_size")
    num_blocks = data.draw(st.integers(1, max(2, 600 // bs)), label="num_blocks")
    h = data.draw(heads(), label="heads")
    shape = (num_blocks, bs, h.Hkv, h.D)
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    cache = new_pool(t, num_blocks, bs, h)
    k_pool, v_pool = np.zeros(shape), np.zeros(shape)  # what the pool must hold
    context = "a write of every slot in shuffled order"
    for _ in range(2):
        capacity = num_blocks * bs
        if context.startswith("a write of every"):
            slots = rng.permutation(capacity)
        else:
            chosen = rng.permutation(capacity)[
                : data.draw(st.integers(1, capacity), label="tokens")
            ]
            pads = data.draw(st.integers(0, 3), label="padding slots (-1)")
            slots = rng.permutation(np.concatenate([chosen, -np.ones(pads, np.int64)]))
        k, v = t.inputs(
            normal(rng, (slots.size, h.Hkv, h.D)), normal(rng, (slots.size, h.Hkv, h.D))
        )
        text = write(t, cache, k, v, slots)
        keep = slots >= 0
        k_pool.reshape(-1, h.Hkv, h.D)[slots[keep]] = k[keep]
        v_pool.reshape(-1, h.Hkv, h.D)[slots[keep]] = v[keep]
        for name, got, want in zip(
            ("k_pages", "v_pages"), read_pool(t, cache, shape), (k_pool, v_pool), strict=True
        ):
            wrong = ~((got == want) | (np.isnan(got) & np.isnan(want)))
            if wrong.any():
                blk, off, hh, d = (int(i) for i in np.argwhere(wrong)[0])
                slot = blk * bs + off
                written = slot in set(slots[keep].tolist())
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
    "seq_lens that are not multiples of the block size, decode and multi-token chunks",
    needs=("paged_kv_cache", "paged_kv_write", "paged_attention"),
)
def paged_eq_dense(t: Target, data: st.DataObject) -> None:
    lay = data.draw(layouts(), label="layout")
    h = data.draw(heads(), label="heads")
    opts = draw_options(t, data, int(lay.seq_lens.max()))
    cache, q, keys, values = fill(t, data, lay, h)
    out = attend(
        t, cache, q, table=lay.table, seq_lens=lay.seq_lens, cu_q=lay.cu_q, opts=opts, Dv=h.D
    )
    what = (
        f"paged_attention(block_size={lay.bs}, seq_lens={lay.seq_lens.tolist()}, "
        f"new tokens={lay.q_lens.tolist()}, shared prefix blocks={lay.shared}, {opts})"
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
    lay = data.draw(layouts(share=False), label="layout")
    h = data.draw(heads(), label="heads")
    cache, q, keys, values = fill(t, data, lay, h)
    call: dict[str, Any] = {
        "table": lay.table,
        "seq_lens": lay.seq_lens,
        "cu_q": lay.cu_q,
        "opts": {},
        "Dv": h.D,
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
    shape = (where.size, h.Hkv, h.D)
    write(t, cache, garbage(rng, shape, t.dtype), garbage(rng, shape, t.dtype), where)
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
    bs = data.draw(st.sampled_from([1, 2, 3, 4, 16]), label="block_size")
    h = data.draw(heads(), label="heads")
    reqs = data.draw(schedules(), label="requests")
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    tokens = [r.prompt + r.decodes for r in reqs]
    qkv = [
        t.inputs(*(normal(rng, (n, H, h.D)) for H in (h.Hq, h.Hkv, h.Hkv))) for n in tokens
    ]  # per request: q (n, Hq, D), k (n, Hkv, D), v (n, Hkv, D)
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
        out = attend(t, cache, q, table=table, seq_lens=seq_lens, cu_q=cu_q, opts={}, Dv=h.D)
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
