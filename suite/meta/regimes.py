"""Which regimes a clause run actually reaches: the shapes and magnitudes its calls received.

    python -m attnspec.suite.meta.regimes [CLAUSE ...]

`Recorder` wraps an implementation and notes, for every call the clauses make, the key or
cache length, the head group, the head dim, the batch and the largest |logit|; `reached`
names the regimes (REGIMES) those calls fall in. The wrapper keeps the implementation's name,
so Hypothesis draws exactly the examples of that implementation's conformance run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import settings

from attnspec.specs import profiles
from attnspec.specs.catalog import all_clauses, get
from attnspec.specs.runner import NotImplementedByImpl, run_clause
from attnspec.specs.strategies import BOUNDARY_LENGTHS

SPLIT_KV = 1024  # flash-decoding / split-KV kernels switch paths past about this many keys


@dataclass
class Seen:
    """Everything one clause run handed the implementation."""

    keys: list[int] = field(default_factory=list)  # Tk of attention calls, cache lengths
    groups: list[tuple[int, int]] = field(default_factory=list)  # (Hkv, G)
    head_dims: list[int] = field(default_factory=list)
    batches: list[tuple[int, int]] = field(default_factory=list)  # (B, Tk)
    logits: list[float] = field(default_factory=list)  # largest |scaled logit| per call
    heads: list[int] = field(default_factory=list)  # Hq
    value_dims: list[tuple[int, int]] = field(default_factory=list)  # (D, Dv)
    positions: list[int] = field(default_factory=list)  # decoder: last position + 1
    chunks: list[tuple[int, int]] = field(default_factory=list)  # (chunk_size, T)
    serving: ServingSeen = field(default_factory=lambda: ServingSeen())  # the serving block below


def is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


REGIMES: dict[str, Callable[[Seen], bool]] = {
    "keys > 1024 (split-KV)": lambda s: any(t > SPLIT_KV for t in s.keys),
    "keys >= 4095": lambda s: any(t >= 4095 for t in s.keys),
    "keys > 32768 (long context)": lambda s: any(t > 32768 for t in s.keys),
    "keys at 2^k +- 1 (tiles)": lambda s: any(
        t in BOUNDARY_LENGTHS and not is_pow2(t) for t in s.keys
    ),
    "group 3/5/6/7, Hkv >= 2": lambda s: any(g in (3, 5, 6, 7) and h >= 2 for h, g in s.groups),
    "group >= 8": lambda s: any(g >= 8 for _, g in s.groups),
    "group >= 8, Hkv >= 2": lambda s: any(g >= 8 and h >= 2 for h, g in s.groups),
    "Dv != D": lambda s: any(d != dv for d, dv in s.value_dims),
    "group 3/5/6/7 or >= 8": lambda s: any(g in (3, 5, 6, 7) or g >= 8 for _, g in s.groups),
    "head dim 80-256, not 128": lambda s: any(80 <= d <= 256 and d != 128 for d in s.head_dims),
    "MQA (Hkv = 1)": lambda s: any(h == 1 and g > 1 for h, g in s.groups),
    "Hq >= 32": lambda s: any(h >= 32 for h in s.heads),
    "head dim 80/96/112": lambda s: any(d in (80, 96, 112) for d in s.head_dims),
    "head dim >= 192": lambda s: any(d >= 192 for d in s.head_dims),
    "batch >= 5, keys >= 256": lambda s: any(b >= 5 and t >= 256 for b, t in s.batches),
    "|logit| >= 1e5": lambda s: any(x >= 1e5 for x in s.logits),
    "|logit| <= 1e-2": lambda s: any(x <= 1e-2 for x in s.logits),
    "hostile mask (|logit| >= 1e9)": lambda s: any(x >= 1e9 for x in s.logits),
    "positions > 512": lambda s: any(p > 512 for p in s.positions),
    "linear T > 1024": lambda s: any(t > SPLIT_KV for _, t in s.chunks),
    "linear T >= 4095": lambda s: any(t >= 4095 for _, t in s.chunks),
    "chunk 16-128 with a remainder": lambda s: any(
        16 <= c <= 128 and t % c and t > c for c, t in s.chunks
    ),
}

# What each clause must reach at the default tier, and what each family of clauses must reach
# in at least one of its clauses (the regime meta-test fails otherwise).
ATTENTION = ["keys > 1024 (split-KV)", "group 3/5/6/7 or >= 8", "head dim 80-256, not 128"]
ATTENTION_FAMILY = [
    "keys >= 4095",
    "keys > 32768 (long context)",
    "keys at 2^k +- 1 (tiles)",
    "group 3/5/6/7, Hkv >= 2",
    "group >= 8",
    "group >= 8, Hkv >= 2",
    "Hq >= 32",
    "Dv != D",
    "MQA (Hkv = 1)",
    "head dim 80/96/112",
    "head dim >= 192",
    "batch >= 5, keys >= 256",
]
WIDE = ["group >= 8, Hkv >= 2", "Hq >= 32", "Dv != D"]  # a whole wide layer; DeepSeek's dims
LINEAR = ["linear T > 1024", "chunk 16-128 with a remainder"]
REQUIRED: dict[str, list[str]] = {
    "ATTN-REF": [*ATTENTION, *WIDE, "keys > 32768 (long context)"],
    "ATTN-CAUSAL-NO-FUTURE": [*ATTENTION, *WIDE, "hostile mask (|logit| >= 1e9)"],
    "ATTN-STABLE": [*ATTENTION, *WIDE, "|logit| >= 1e5", "|logit| <= 1e-2"],
    "ATTN-CONVEX": [*ATTENTION, *WIDE, "keys >= 4095", "group >= 8", "MQA (Hkv = 1)"],
    "ATTN-PERMUTE": [*ATTENTION, *WIDE, "keys >= 4095", "group >= 8", "MQA (Hkv = 1)"],
    "ATTN-BATCH-INDEP": [*ATTENTION, *WIDE],
    "KV-DECODE-EQ-RECOMPUTE": [*ATTENTION, "keys >= 4095", "group >= 8", "MQA (Hkv = 1)"],
    "KV-CHUNKED-PREFILL": ATTENTION,
    "KV-APPEND-ONLY": ["keys > 1024 (split-KV)", "keys >= 4095"],
    "KV-CAPACITY": ["keys > 1024 (split-KV)"],
    "KV-BYTES": [],
    "FLASH-EQ-ATTN": [*ATTENTION, *WIDE],
    "FLASH-LSE": [*ATTENTION, *WIDE, "keys >= 4095", "group >= 8", "MQA (Hkv = 1)"],
    "FLASH-STABLE": [*ATTENTION, *WIDE, "|logit| >= 1e5"],
    "LIN-REF": LINEAR[:1],
    "LIN-NO-FUTURE": LINEAR,
    "LIN-FORMS-AGREE": LINEAR,
    "LIN-SPLIT-RESUME": [*LINEAR, "linear T >= 4095"],
    "LIN-DECODE-EQ-PREFILL": [*LINEAR, "linear T >= 4095"],
    "DEC-CACHED-EQ-FULL": ["positions > 512"],
    "DEC-CHUNKED-PREFILL": ["positions > 512"],
    "DEC-GREEDY-EQ": ["positions > 512"],
    "DEC-CROSS-IMPL": ["positions > 512"],
    "DEC-BATCH-INDEP": ["positions > 512"],
}
FAMILIES: dict[str, tuple[list[str], list[str]]] = {  # name: (clauses, regimes one must reach)
    "attention": (
        [c for c in REQUIRED if c.startswith(("ATTN", "FLASH", "KV-DECODE", "KV-CHUNKED"))],
        ATTENTION_FAMILY,
    ),
    "kv-cache": ([c for c in REQUIRED if c.startswith("KV")], ["keys >= 4095"]),
    "linear": ([c for c in REQUIRED if c.startswith("LIN")], ["linear T >= 4095"]),
    "decoder": ([c for c in REQUIRED if c.startswith("DEC")], ["group >= 8"]),
}


# --- Serving regimes (issue 21): options on long paths, big paged pools, Dv != D --------------
# Kept apart from the dense regimes above; each regime counts only where its bug is observable:
# a window shorter than the sequence it cuts, a slot past 65535 actually written, a block id
# past 32767 actually read for a sequence with queries.
PAST_DENSE = 2048  # a dense / tiled decode past this many keys (split-KV paths)
PAST_SERVING = 1024  # a varlen or paged sequence past this many keys


@dataclass
class ServingSeen:
    """What the serving ops (and the options of the dense ones) received."""

    options: list[tuple[str, str, int]] = field(default_factory=list)  # (op, option, keys)
    slots_written: list[int] = field(default_factory=list)  # largest slot of each write
    pool_slots: list[int] = field(default_factory=list)  # slots of each pool made
    block_ids: list[int] = field(default_factory=list)  # largest block id each call read
    value_dims: list[tuple[str, int, int]] = field(default_factory=list)  # (op, D, Dv)


def option_past(op: str, option: str, past: int) -> Callable[[Seen], bool]:
    """A call of `op` whose `option` acted on a sequence (or cache) of more than `past` keys."""
    return lambda s: any(o == op and n == option and k > past for o, n, k in s.serving.options)


def dims(op: str, test: Callable[[int, int], bool]) -> Callable[[Seen], bool]:
    """A call of `op` whose head dims (D, Dv) pass `test`."""
    return lambda s: any(o == op and test(d, dv) for o, d, dv in s.serving.value_dims)


SERVING_REGIMES: dict[str, Callable[[Seen], bool]] = {
    "attention window, keys > 2048": option_past("attention", "window", PAST_DENSE),
    "attention softcap, keys > 2048": option_past("attention", "softcap", PAST_DENSE),
    "tiled window, keys > 2048": option_past("tiled_attention", "window", PAST_DENSE),
    "tiled softcap, keys > 2048": option_past("tiled_attention", "softcap", PAST_DENSE),
    "varlen window, sequence > 1024": option_past("varlen_attention", "window", PAST_SERVING),
    "varlen softcap, sequence > 1024": option_past("varlen_attention", "softcap", PAST_SERVING),
    "paged window, sequence > 1024": option_past("paged_attention", "window", PAST_SERVING),
    "paged softcap, sequence > 1024": option_past("paged_attention", "softcap", PAST_SERVING),
    "paged slot >= 65536 written": lambda s: any(x >= 1 << 16 for x in s.serving.slots_written),
    "paged block id > 32767 read": lambda s: any(b >= 1 << 15 for b in s.serving.block_ids),
    "varlen Dv != D": dims("varlen_attention", lambda d, dv: d != dv),
    "varlen D 192, Dv 128 (DeepSeek)": dims(
        "varlen_attention", lambda d, dv: (d, dv) == (192, 128)
    ),
    "paged Dv != D": dims("paged_attention", lambda d, dv: d != dv),
    "paged D 192, Dv 128 (DeepSeek)": dims("paged_attention", lambda d, dv: (d, dv) == (192, 128)),
}
REGIMES.update(SERVING_REGIMES)
REQUIRED.update(
    {
        "ATTN-WINDOW": ["attention window, keys > 2048", "tiled window, keys > 2048"],
        "ATTN-SOFTCAP": ["attention softcap, keys > 2048", "tiled softcap, keys > 2048"],
        "VARLEN-EQ-PER-SEQ": [
            "varlen window, sequence > 1024",
            "varlen softcap, sequence > 1024",
            "varlen Dv != D",
            "varlen D 192, Dv 128 (DeepSeek)",
        ],
        "VARLEN-NO-CROSS": ["varlen Dv != D"],
        "PAGED-WRITE-SLOTS": ["paged slot >= 65536 written"],
        "PAGED-EQ-DENSE": [
            "paged window, sequence > 1024",
            "paged softcap, sequence > 1024",
            "paged block id > 32767 read",
            "paged Dv != D",
            "paged D 192, Dv 128 (DeepSeek)",
        ],
        "PAGED-IGNORES-UNOWNED": ["paged Dv != D"],
        "PAGED-DECODE-EQ-RECOMPUTE": ["paged Dv != D"],
    }
)
FAMILIES["serving"] = (
    ["ATTN-WINDOW", "ATTN-SOFTCAP", *(c for c in REQUIRED if c.startswith(("VARLEN", "PAGED")))],
    list(SERVING_REGIMES),
)
# --- end of the serving regimes ----------------------------------------------------------------


class Recorder:
    """`impl` seen through a recording wrapper: same name, ops and results."""

    def __init__(self, impl: Any) -> None:
        self.impl = impl
        self.seen = Seen()
        self.name = impl.name
        self.dtypes = getattr(impl, "dtypes", None)
        self.asarray = impl.asarray
        self.to_numpy = impl.to_numpy
        for op in ("attention", "tiled_attention", "kv_cache", "decoder"):
            if callable(getattr(impl, op, None)):
                setattr(self, op, getattr(self, f"_{op}"))
        for op in ("linear_attention", "linear_attention_chunked", "linear_attention_recurrent"):
            if callable(getattr(impl, op, None)):
                setattr(self, op, self._linear(op))
        self.wrap_serving(impl)  # the serving block below

    def numpy(self, x: Any) -> np.ndarray:
        return np.asarray(self.impl.to_numpy(x), np.float64)

    def note_attention(self, q: Any, k: Any, v: Any, scale: float | None) -> None:
        B, Hq, Tq, D = (int(n) for n in q.shape)
        Hkv, Tk = int(k.shape[1]), int(k.shape[2])
        s = self.seen
        s.value_dims.append((D, int(v.shape[-1])))
        s.keys.append(Tk)
        s.groups.append((Hkv, Hq // Hkv))
        s.heads.append(Hq)
        s.head_dims.append(D)
        s.batches.append((B, Tk))
        qq = self.numpy(q).reshape(B, Hkv, Hq // Hkv * Tq, D)  # (B, Hkv, G*Tq, D)
        raw = np.abs(qq @ self.numpy(k).swapaxes(-1, -2)).max()  # largest |q . k|
        s.logits.append(float(raw) * (1 / np.sqrt(D) if scale is None else scale))

    def _attention(self, q: Any, k: Any, v: Any, **kw: Any) -> Any:
        self.note_attention(q, k, v, kw.get("scale"))
        return self.impl.attention(q, k, v, **kw)

    def _tiled_attention(self, q: Any, k: Any, v: Any, **kw: Any) -> Any:
        self.note_attention(q, k, v, kw.get("scale"))
        return self.impl.tiled_attention(q, k, v, **kw)

    def _kv_cache(self, batch: int, kv_heads: int, head_dim: int, max_len: int, dtype: Any) -> Any:
        self.seen.keys.append(max_len)
        return RecordedCache(
            self.impl.kv_cache(batch, kv_heads, head_dim, max_len, dtype), self.seen
        )

    def _linear(self, op: str) -> Callable[..., Any]:
        def run(q: Any, k: Any, v: Any, **kw: Any) -> Any:
            self.seen.chunks.append((int(kw.get("chunk_size", 0)), int(q.shape[2])))
            return getattr(self.impl, op)(q, k, v, **kw)

        return run

    def _decoder(self, config: Any, weights: Any) -> Any:
        self.seen.groups.append((config.n_kv_heads, config.n_heads // config.n_kv_heads))
        return RecordedModel(self.impl.decoder(config, weights), self.seen)

    # --- serving ops (issue 21): wrapped by wrap_serving, called at the end of __init__ --------
    def wrap_serving(self, impl: Any) -> None:
        """Record the options of the dense ops and what the serving ops receive; pass the
        implementation's option and limit declarations through."""
        self.options = getattr(impl, "options", None)
        self.limits = getattr(impl, "limits", None)
        for op in ("attention", "tiled_attention"):
            if callable(getattr(self, op, None)):
                setattr(self, op, self._with_options(op, getattr(self, op)))
        for op in ("varlen_attention", "paged_kv_cache", "paged_kv_write", "paged_attention"):
            if callable(getattr(impl, op, None)):
                setattr(self, op, getattr(self, f"_{op}"))

    def note_options(self, op: str, kw: dict[str, Any], lens: list[int]) -> None:
        """Note each option of a call with the longest of `lens` (keys of the sequences that
        have queries) it acts on: a window only where it is shorter than the sequence."""
        window, softcap = kw.get("window"), kw.get("softcap")
        if window is not None and any(n > window for n in lens):
            self.seen.serving.options.append((op, "window", max(n for n in lens if n > window)))
        if softcap is not None and lens:
            self.seen.serving.options.append((op, "softcap", max(lens)))

    def _with_options(self, op: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def run(q: Any, k: Any, v: Any, **kw: Any) -> Any:
            self.note_options(op, kw, [int(k.shape[2])])
            return call(q, k, v, **kw)

        return run

    def index(self, x: Any) -> np.ndarray:
        return self.numpy(x).astype(np.int64)

    def _varlen_attention(self, q: Any, k: Any, v: Any, **kw: Any) -> Any:
        q_lens = np.diff(self.index(kw["cu_seqlens_q"]))  # (B,)
        k_lens = np.diff(self.index(kw["cu_seqlens_k"]))  # (B,)
        self.note_options("varlen_attention", kw, [int(n) for n in k_lens[q_lens > 0]])
        self.seen.serving.value_dims.append(("varlen_attention", int(q.shape[2]), int(v.shape[2])))
        return self.impl.varlen_attention(q, k, v, **kw)

    def _paged_kv_cache(
        self, num_blocks: int, block_size: int, kv_heads: int, head_dim: int, dtype: Any, **kw: Any
    ) -> Any:
        self.seen.serving.pool_slots.append(num_blocks * block_size)
        return self.impl.paged_kv_cache(num_blocks, block_size, kv_heads, head_dim, dtype, **kw)

    def _paged_kv_write(self, cache: Any, k: Any, v: Any, slot_mapping: Any) -> Any:
        slots = self.index(slot_mapping)
        if slots.size:
            self.seen.serving.slots_written.append(int(slots.max()))
        return self.impl.paged_kv_write(cache, k, v, slot_mapping)

    def _paged_attention(self, q: Any, cache: Any, **kw: Any) -> Any:
        q_lens = np.diff(self.index(kw["cu_seqlens_q"]))  # (B,)
        seq_lens = self.index(kw["seq_lens"])  # (B,)
        table = self.index(kw["block_table"])  # (B, max_blocks)
        bs = int(cache.k_pages.shape[1])
        used = np.arange(table.shape[1])[None, :] < -(-seq_lens // bs)[:, None]  # (B, max_blocks)
        read = table[used & (q_lens > 0)[:, None]]
        if read.size:
            self.seen.serving.block_ids.append(int(read.max()))
        self.note_options("paged_attention", kw, [int(n) for n in seq_lens[q_lens > 0]])
        dv = int(cache.v_pages.shape[3])
        self.seen.serving.value_dims.append(("paged_attention", int(q.shape[2]), dv))
        return self.impl.paged_attention(q, cache, **kw)

    # --- end of the serving ops -------------------------------------------------------------


class RecordedCache:
    """A KV cache that notes its length after every append."""

    def __init__(self, cache: Any, seen: Seen) -> None:
        self.cache, self.seen = cache, seen

    def append(self, k: Any, v: Any) -> Any:
        out = self.cache.append(k, v)
        self.seen.keys.append(len(self.cache))
        return out

    def __len__(self) -> int:
        return len(self.cache)

    @property
    def nbytes(self) -> Any:
        return self.cache.nbytes


class RecordedModel:
    """A decoder model that notes the last position each call reaches."""

    def __init__(self, model: Any, seen: Seen) -> None:
        self.model, self.seen = model, seen

    def forward(self, tokens: Any) -> Any:
        self.seen.positions.append(int(tokens.shape[1]))
        return self.model.forward(tokens)

    def prefill(self, tokens: Any) -> Any:
        self.seen.positions.append(int(tokens.shape[1]))
        return self.model.prefill(tokens)

    def decode(self, tokens: Any, cache: Any) -> Any:
        self.seen.positions.append(len(cache) + int(tokens.shape[1]))
        return self.model.decode(tokens, cache)


def record(clause_id: str, impl: Any, tier: str = "default", dtype: str = "float32") -> Seen:
    """Run `clause_id` on `impl` under the tier's settings; what its calls received."""
    profiles.register()
    recorder = Recorder(impl)
    try:
        run_clause(
            clause_id, recorder, dtype=dtype, settings_=settings.get_profile(f"attnspec-{tier}")
        )
    except NotImplementedByImpl:
        pass
    return recorder.seen


def reached(seen: Seen) -> list[str]:
    """The regimes of REGIMES that `seen` falls in."""
    return [name for name, test in REGIMES.items() if test(seen)]


def largest(seen: Seen) -> dict[str, Any]:
    """The largest key length, group, head dim and |logit| a run drew (for the closing note)."""
    return {
        "T": max([*seen.keys, *(t for _, t in seen.chunks), *seen.positions], default=0),
        "group": max((g for _, g in seen.groups), default=0),
        "D": max(seen.head_dims, default=0),
        "|logit|": max(seen.logits, default=0.0),
    }


def missing_by_clause(seen: dict[str, Seen]) -> dict[str, list[str]]:
    """For each clause with requirements, the required regimes it never reached."""
    return {cid: [r for r in REQUIRED[cid] if r not in reached(s)] for cid, s in seen.items()}


def missing_by_family(seen: dict[str, Seen]) -> dict[str, list[str]]:
    """For each family, the regimes none of its clauses reached."""
    out = {}
    for family, (clauses, regimes) in FAMILIES.items():
        got = {r for c in clauses if c in seen for r in reached(seen[c])}
        out[family] = [r for r in regimes if r not in got]
    return out


def main(argv: list[str] | None = None) -> int:
    import attnspec.implementations.numpy_impl as numpy_impl

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clauses", nargs="*", help="clause IDs (default: all with regimes)")
    parser.add_argument("--tier", default="default")
    args = parser.parse_args(argv)
    ids = args.clauses or [c.id for c in all_clauses() if c.id in REQUIRED]
    seen = {get(cid).id: record(cid, numpy_impl, args.tier) for cid in ids}
    lacking = missing_by_clause(seen)
    for cid, s in seen.items():
        big = largest(s)
        print(
            f"{cid:24} T {big['T']:5}  group {big['group']:3}  D {big['D']:4}  "
            f"|logit| {big['|logit|']:9.3g}" + (f"  MISSING {lacking[cid]}" if lacking[cid] else "")
        )
    families = missing_by_family(seen) if not args.clauses else {}
    for family, lacks in families.items():
        if lacks:
            print(f"family {family}: MISSING {lacks}")
    return 1 if any(lacking.values()) or any(families.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
