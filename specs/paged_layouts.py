"""Paged layouts: the pools, heads and block tables the paged clauses (attnspec.specs.paged) draw.

Tables are shuffled (non-contiguous blocks), may share a prefix block between sequences, and
carry extra columns past each sequence's last block that point anywhere in the pool. Besides
small pools, a layout holds one sequence past 1024 keys (where the options an implementation
declares are drawn first) or lives at the top of a big pool (block ids past 32767, past 65536
slots: 16-bit block and slot arithmetic wraps there), with small heads so the big pool stays
cheap. Values may have their own head dim (Dv != D, DeepSeek's 192/128) where paged_kv_cache
takes `v_head_dim`. Every draw stays inside the implementation's declared limits (attnspec.specs.limits:
block sizes, head dims); what they put out of reach is noted for the report.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from attnspec.specs import limits
from attnspec.specs.runner import Target
from attnspec.specs.strategies import seeds
from attnspec.specs.varlen import MLA_DIMS

BLOCK_SIZES = (1, 16, 256)  # vLLM's 16, flash-attn's 256, and the degenerate 1
HEAD_DIMS = (1, 8, 16, 17, 32, 64)
SMALL_HEAD_DIMS = (4, 8, 1)  # heads of a long sequence or a big pool
LONG_SEQ = (1025, 2049, 1100)  # a sequence past 1024 keys (PAST)
LONG_QUERIES = (1, 7, 16)  # its new tokens: decode, a chunk
WIDE_SLOTS = 1 << 16  # a big pool has more slots than this: 16-bit unsigned slots wrap
WIDE_BLOCK = 1 << 15  # a big pool's sequences live in blocks from this id on: int16 ids wrap
BIG_BLOCK_SIZES = (1, 2)  # block sizes of a big pool (moved up by the limits: a bigger pool)
POOL_BUDGET = 1 << 21  # elements (slots x Hkv x head dim) of one big pool's pages
KINDS = ("long sequence", "big pool", "small")  # layout kinds, the realistic ones first


@dataclass(frozen=True)
class Heads:
    """Query heads, kv heads, and the head dims of keys (D) and values (Dv) of one pool."""

    Hq: int
    Hkv: int
    D: int
    Dv: int


def takes_v_head_dim(t: Target) -> bool:
    """Whether paged_kv_cache takes `v_head_dim` (values of their own head dim); noted in the
    limits' report when it does not."""
    try:
        params = inspect.signature(t.impl.paged_kv_cache).parameters.values()
    except (TypeError, ValueError):
        return False
    if any(p.name == "v_head_dim" or p.kind is p.VAR_KEYWORD for p in params):
        return True
    limits.current().note("Dv != D (paged_kv_cache takes no v_head_dim)")
    return False


@st.composite
def heads(draw: st.DrawFn, *, dv: bool, small: bool = False) -> Heads:
    """GQA heads and head dims (small ones for a long sequence or a big pool); with `dv`, values
    of another head dim too (DeepSeek's 192/128 among them); inside the declared head dims."""
    Hkv = draw(st.integers(1, 1 if small else 3), label="Hkv")
    G = draw(st.integers(1, 2 if small else 4), label="Hq/Hkv")
    D = draw(st.sampled_from(SMALL_HEAD_DIMS if small else HEAD_DIMS), label="D")
    Dv = D
    if dv:
        Dv = draw(st.one_of(st.just(D), st.sampled_from(SMALL_HEAD_DIMS)), label="Dv")
        if not small and draw(st.integers(0, 3), label="DeepSeek's 192/128 (if 0)") == 0:
            D, Dv = MLA_DIMS
    lim = limits.current()
    return Heads(Hkv * G, Hkv, lim.head_dim(D), lim.head_dim(Dv))


def block_sizes(menu: tuple[int, ...] = BLOCK_SIZES, odd: bool = True) -> st.SearchStrategy[int]:
    """1, 16 and 256, and small sizes that are not powers of two, each moved to the next size
    the implementation declares (16 -> 16, 1 and 2..7 -> 16 under a multiple of 16)."""
    sizes = st.one_of(st.sampled_from(menu), st.integers(2, 7)) if odd else st.sampled_from(menu)
    return sizes.map(limits.current().block_size)


def blocks_for(n: int, bs: int) -> int:
    """Blocks that n tokens fill."""
    return -(-n // bs)


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
    base: int = 0  # the sequences and spare blocks live in blocks base.. (a big pool's top)

    @property
    def cu_q(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.q_lens)]).astype(np.int32)  # (B+1,)


def layout_kinds(*, long: bool = True, big: bool = True) -> st.SearchStrategy[str]:
    """Which layout an example draws: a long sequence, a big pool, or a small one."""
    return st.sampled_from([k for k in KINDS if (long or k != KINDS[0]) and (big or k != KINDS[1])])


def big_pool_blocks(bs: int, h: Heads, used: int, *, fallback: int) -> int:
    """Blocks of a big pool whose top `used` blocks start at id WIDE_BLOCK and whose slots pass
    WIDE_SLOTS; where that passes POOL_BUDGET elements (the declared block sizes and head dims
    make it too big), `fallback` blocks, noted in the limits' report."""
    want = max(WIDE_BLOCK + used, -(-(WIDE_SLOTS + 1) // bs))
    if want * bs * h.Hkv * max(h.D, h.Dv) <= POOL_BUDGET:
        return want
    limits.current().note(f"block ids past {WIDE_BLOCK - 1} (a pool that big at block size {bs})")
    return fallback


@st.composite
def layouts(draw: st.DrawFn, *, h: Heads, kind: str = "small", share: bool = True) -> Layout:
    """1..4 sequences over a shuffled pool with spare blocks; sequence 1 may share sequence 0's
    first full blocks; table columns past a sequence's blocks hold arbitrary block ids. A "long
    sequence" layout gives one sequence 1025..2049 keys; a "big pool" one puts the sequences
    in the top blocks of a pool past 32768 blocks and 65536 slots."""
    big = kind == "big pool"
    bs = draw(block_sizes(BIG_BLOCK_SIZES, odd=False) if big else block_sizes(), label="block_size")
    B = draw(st.integers(1, 4), label="sequences")
    longest = max(40, 2 * bs + bs // 2)
    seq_lens = [draw(st.integers(1, longest), label="seq_len") for _ in range(B)]
    q_lens = []
    for n in seq_lens:
        chunk = st.integers(1, min(n, 16))
        whole = [st.just(n)] if n <= 64 else []
        q_lens.append(draw(st.one_of(st.just(0), st.just(1), chunk, *whole), label="new tokens"))
    if kind == "long sequence":
        b = draw(st.integers(0, B - 1), label="long sequence")
        seq_lens[b] = draw(st.sampled_from(LONG_SEQ), label="its seq_len")
        q_lens[b] = draw(st.sampled_from(LONG_QUERIES), label="its new tokens")
    if not any(q_lens):
        q_lens[0] = 1
    shared = 0
    if share and B >= 2 and seq_lens[0] >= bs:
        most = min(seq_lens[0] // bs, seq_lens[1] // bs)
        shared = draw(st.integers(0, most), label="shared prefix blocks")
    need = [blocks_for(n, bs) for n in seq_lens]
    spare = draw(st.integers(0, 4), label="spare blocks")
    used = sum(need) - shared + spare
    num_blocks = big_pool_blocks(bs, h, used, fallback=used) if big else used
    base = num_blocks - used
    rng = np.random.default_rng(draw(seeds(), label="block shuffle seed"))
    free = list(base + rng.permutation(used))
    max_blocks = max(need) + draw(st.integers(0, 2), label="extra table columns")
    table = rng.integers(0, num_blocks, (B, max_blocks))  # (B, max_blocks) padding: anything
    owned = np.zeros(num_blocks, bool)
    for b, n in enumerate(need):
        mine = [free.pop() for _ in range(n - (shared if b == 1 else 0))]
        table[b, :n] = [*table[0, :shared], *mine] if b == 1 else mine
        owned[table[b, :n]] = True
    return Layout(bs, num_blocks, np.array(seq_lens), np.array(q_lens), table, owned, shared, base)
