"""Serving mutants: the bookkeeping bugs of varlen batches, paged caches, windows and softcaps."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace
from typing import Any

import numpy as np

import attnspec.implementations.numpy_impl as base
import attnspec.specs.cost as cost
from attnspec.implementations.discovery import flop_counter
from attnspec.implementations.numpy_impl import serving
from attnspec.specs.cost import Cost
from attnspec.specs.cost_clauses import CostSubject
from attnspec.suite.meta.mutants import Mutant, derive

OPTIONS = frozenset({"window", "softcap"})


def logits(q: np.ndarray, k: np.ndarray, scale: float | None) -> np.ndarray:
    """Scaled float64 scores (Hq, Tq, Tk) of one packed sequence q (Tq, Hq, D), k (Tk, Hkv, D)."""
    kk = np.repeat(k, q.shape[1] // k.shape[1], axis=1)  # (Tk, Hq, D)
    sc = 1.0 / np.sqrt(q.shape[2]) if scale is None else scale
    return np.einsum("qhd,khd->hqk", q.astype(np.float64), kk) * sc  # (Hq, Tq, Tk)


def weighted(p: np.ndarray, v: np.ndarray, dtype: Any) -> np.ndarray:
    """Normalised weights p (Hq, Tq, Tk) times values v (Tk, Hkv, Dv) -> (Tq, Hq, Dv)."""
    vv = np.repeat(v, p.shape[0] // v.shape[1], axis=1).astype(np.float64)  # (Tk, Hq, Dv)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = p / p.sum(axis=-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", p, vv).astype(dtype)


def broken_varlen(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    cu_seqlens_q: np.ndarray,
    cu_seqlens_k: np.ndarray,
    causal: bool,
    scale: float | None = None,
    top_left: bool = False,
    global_max: bool = False,
    shift: int = 0,
) -> np.ndarray:
    """Varlen attention with one switchable bug: a top-left causal mask per sequence, one
    softmax max shared by the whole packed batch, or keys starting `shift` rows early."""
    B = len(cu_seqlens_q) - 1
    scores = []
    for b in range(B):
        q0, q1 = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1])
        k0, k1 = max(int(cu_seqlens_k[b]) - shift, 0), int(cu_seqlens_k[b + 1])
        s = logits(q[q0:q1], k[k0:k1], scale)  # (Hq, Tq, Tk)
        if causal:
            i, j = np.arange(q1 - q0)[:, None], np.arange(k1 - k0)[None, :]
            s = np.where(j <= i + (0 if top_left else k1 - k0 - (q1 - q0)), s, -np.inf)
        scores.append((s, slice(q0, q1), slice(k0, k1)))
    shared = max((float(s.max()) for s, *_ in scores if s.size), default=0.0)
    out = np.zeros((q.shape[0], q.shape[1], v.shape[2]), q.dtype)  # (total_q, Hq, Dv)
    for s, qs, ks in scores:
        if s.size:
            m = shared if global_max else np.max(s, axis=-1, keepdims=True)
            out[qs] = weighted(np.exp(s - m), v[ks], q.dtype)
    return out


def varlen_mutant(name: str, bug: str, kills: tuple[str, ...], **switch: Any) -> Mutant:
    impl = derive(base, f"mutant-{name}", varlen_attention=partial(broken_varlen, **switch))
    return Mutant(name, bug, impl, kills)


def broken_paged(
    q: np.ndarray,
    cache: Any,
    *,
    block_table: np.ndarray,
    seq_lens: np.ndarray,
    cu_seqlens_q: np.ndarray,
    causal: bool = True,
    scale: float | None = None,
    window: int | None = None,
    softcap: float | None = None,
    drop_window: bool = False,
    whole_rows: bool = False,
    mask_value: float = -np.inf,
    memoise: bool = False,
) -> np.ndarray:
    """Paged attention with one switchable bug: the window ignored; every block of the table row
    read and masked by logits only (0 x NaN); a finite mask value; or block contents memoised
    by block id (stale once a freed block is reused)."""
    if drop_window or (not whole_rows and mask_value == -np.inf and not memoise):
        window = None if drop_window else window
        return serving.paged_attention(
            q, cache, block_table=block_table, seq_lens=seq_lens, cu_seqlens_q=cu_seqlens_q,
            causal=causal, scale=scale, window=window, softcap=softcap,
        )  # fmt: skip
    bs = cache.block_size
    memo = cache.__dict__.setdefault("memo", {}) if memoise else None  # lives with the pool
    out = np.zeros((q.shape[0], q.shape[1], cache.v_pages.shape[3]), q.dtype)
    for b in range(len(seq_lens)):
        n = int(seq_lens[b])
        ids = block_table[b] if whole_rows else block_table[b, : -(-n // bs)]
        pages = []
        for i in (int(x) for x in ids):
            if memo is not None:
                memo.setdefault(i, (cache.k_pages[i].copy(), cache.v_pages[i].copy()))
                pages.append(memo[i])
            else:
                pages.append((cache.k_pages[i], cache.v_pages[i]))
        k = np.concatenate([p[0] for p in pages])  # (blocks*bs, Hkv, D)
        v = np.concatenate([p[1] for p in pages])  # (blocks*bs, Hkv, Dv)
        q0, q1 = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1])
        if q1 == q0:
            continue
        with np.errstate(invalid="ignore", over="ignore"):
            s = logits(q[q0:q1], k, scale)  # (Hq, Tq, blocks*bs)
            i, j = np.arange(q1 - q0)[:, None], np.arange(k.shape[0])[None, :]
            s = np.where((j <= i + n - (q1 - q0)) & (j < n), s, -np.inf)
            if mask_value != -np.inf:
                s = np.where((j <= i + n - (q1 - q0)) & (j < n), s, s + mask_value)
                s = np.nan_to_num(s, nan=mask_value)
            m = np.max(s, axis=-1, keepdims=True)
            out[q0:q1] = weighted(np.exp(s - m), v, q.dtype)
    return out


def paged_mutant(name: str, bug: str, kills: tuple[str, ...], **switch: Any) -> Mutant:
    impl = derive(
        base,
        f"mutant-{name}",
        paged_kv_cache=base.paged_kv_cache,
        paged_kv_write=base.paged_kv_write,
        paged_attention=partial(broken_paged, **switch),
        options=OPTIONS if switch.get("drop_window") else frozenset(),  # the others ignore them
    )
    return Mutant(name, bug, impl, kills)


def write_wrapping(cache: Any, k: np.ndarray, v: np.ndarray, slot_mapping: np.ndarray) -> None:
    """paged_kv_write that indexes with slot -1 too: padding lands in the pool's last slot."""
    slots = np.asarray(slot_mapping, np.int64)
    cache.k_pages.reshape(-1, *cache.k_pages.shape[2:])[slots] = k
    cache.v_pages.reshape(-1, *cache.v_pages.shape[2:])[slots] = v


def broken_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool,
    scale: float | None = None,
    window: int | None = None,
    softcap: float | None = None,
    window_extra: int = 0,
    window_top_left: bool = False,
    cap_after_mask: bool = False,
    cap_by_exp: bool = False,
) -> np.ndarray:
    """Dense attention with a window or softcap bug: one key too many in the window, the window
    measured from the query index instead of its position, the cap applied after the mask, or
    tanh written with exponentials (overflows for large logits)."""
    _, Hq, Tq, D = q.shape
    Tk = k.shape[2]
    kk, vv = (np.repeat(x, Hq // k.shape[1], axis=1) for x in (k, v))
    sc = 1.0 / np.sqrt(D) if scale is None else scale
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), kk) * sc  # (B, Hq, Tq, Tk)
    i, j = np.arange(Tq)[:, None], np.arange(Tk)[None, :]
    seen = j <= i + Tk - Tq if causal else np.ones((Tq, Tk), bool)
    if window is not None:
        p = i + (0 if window_top_left else Tk - Tq)
        seen = seen & (j > p - window - window_extra)

    def cap(x: np.ndarray) -> np.ndarray:
        if softcap is None:
            return x
        if cap_by_exp:
            with np.errstate(over="ignore", invalid="ignore"):
                e = np.exp(2 * x / softcap)
                return softcap * (e - 1) / (e + 1)
        return softcap * np.tanh(x / softcap)

    s = cap(np.where(seen, s, -np.inf)) if cap_after_mask else np.where(seen, cap(s), -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(invalid="ignore"):
        p = np.exp(s - m)
        o = np.einsum("bhqk,bhkd->bhqd", p / p.sum(axis=-1, keepdims=True), vv)
    return o.astype(q.dtype)


def option_mutant(name: str, bug: str, kills: tuple[str, ...], **switch: Any) -> Mutant:
    impl = derive(
        base, f"mutant-{name}", attention=partial(broken_attention, **switch), options=OPTIONS
    )
    return Mutant(name, bug, impl, kills)


# --- Long-path, big-pool and Dv != D mutants (issue 21): each misbehaves only in its regime ---


def longest(op: str, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    """The most keys one sequence of the call has (dense: Tk)."""
    if op in ("attention", "tiled_attention"):
        return int(args[1].shape[2])
    if op == "varlen_attention":
        return int(np.diff(np.asarray(kw["cu_seqlens_k"])).max())
    return int(np.asarray(kw["seq_lens"]).max())  # paged_attention


def forgets_past(op: str, option: str, past: int) -> Any:
    """numpy's `op`, except that a call with a sequence past `past` keys (a split-KV or long
    path) drops `option`."""
    right = getattr(base, op)

    def run(*args: Any, **kw: Any) -> Any:
        if longest(op, args, kw) > past:
            kw[option] = None
        return right(*args, **kw)

    return run


def long_path_mutant(op: str, option: str, past: int, kills: str) -> Mutant:
    name = f"{op.split('_')[0]}-{option}-past-{past}"
    ops: dict[str, Any] = {op: forgets_past(op, option, past), "options": OPTIONS}
    if op == "paged_attention":
        ops |= {"paged_kv_cache": base.paged_kv_cache, "paged_kv_write": base.paged_kv_write}
    bug = f"{op} forgets the {option} option once a sequence has more than {past} keys"
    return Mutant(name, bug, derive(base, f"mutant-{name}", **ops), (kills,))


def write_uint16(cache: Any, k: np.ndarray, v: np.ndarray, slot_mapping: np.ndarray) -> None:
    """paged_kv_write with slots held in 16 bits: slot 65536 + s lands in slot s."""
    slots = np.asarray(slot_mapping, np.int64)
    keep = slots >= 0
    serving.paged_kv_write(cache, k[keep], v[keep], slots[keep].astype(np.uint16))


def paged_int16_ids(q: np.ndarray, cache: Any, *, block_table: np.ndarray, **kw: Any) -> Any:
    """paged_attention with block ids held in int16: block 32768 + b reads block b - 32768
    (numpy's negative index: a block near the pool's end)."""
    wrapped = np.asarray(block_table, np.int64).astype(np.int16).astype(np.int64)
    wrapped %= cache.num_blocks  # a kernel's wrapped pointer still lands inside the pool
    return serving.paged_attention(q, cache, block_table=wrapped, **kw)


def scaled_by_dv(op: str) -> Any:
    """numpy's `op` with the default scale 1/sqrt(Dv) (the values' head dim) for 1/sqrt(D)."""
    right = getattr(base, op)

    def run(q: Any, *args: Any, scale: float | None = None, **kw: Any) -> Any:
        Dv = args[1].shape[2] if op == "varlen_attention" else args[0].v_pages.shape[3]
        return right(q, *args, scale=1.0 / np.sqrt(Dv) if scale is None else scale, **kw)

    return run


def paged_ops(**ops: Any) -> dict[str, Any]:
    """numpy's paged ops with some replaced."""
    return {
        "paged_kv_cache": base.paged_kv_cache,
        "paged_kv_write": base.paged_kv_write,
        "paged_attention": base.paged_attention,
        **ops,
    }


REGIME_MUTANTS = [
    long_path_mutant("attention", "window", 2048, "ATTN-WINDOW"),
    long_path_mutant("tiled_attention", "window", 2048, "ATTN-WINDOW"),
    long_path_mutant("attention", "softcap", 2048, "ATTN-SOFTCAP"),
    long_path_mutant("tiled_attention", "softcap", 2048, "ATTN-SOFTCAP"),
    long_path_mutant("varlen_attention", "window", 1024, "VARLEN-EQ-PER-SEQ"),
    long_path_mutant("varlen_attention", "softcap", 1024, "VARLEN-EQ-PER-SEQ"),
    long_path_mutant("paged_attention", "window", 1024, "PAGED-EQ-DENSE"),
    long_path_mutant("paged_attention", "softcap", 1024, "PAGED-EQ-DENSE"),
    Mutant(
        "paged-slots-uint16",
        "paged_kv_write holds slots in 16 bits: past 65535 slots a token lands 65536 slots early",
        derive(base, "mutant-paged-slots-uint16", **paged_ops(paged_kv_write=write_uint16)),
        ("PAGED-WRITE-SLOTS",),
    ),
    Mutant(
        "paged-block-ids-int16",
        "paged_attention holds block ids in int16: a block past 32767 is read from another block",
        derive(base, "mutant-paged-block-ids-int16", **paged_ops(paged_attention=paged_int16_ids)),
        ("PAGED-EQ-DENSE",),
    ),
    Mutant(
        "varlen-scale-by-dv",
        "varlen attention's default scale is 1/sqrt(Dv), the values' head dim (DeepSeek's 192/128)",
        derive(
            base, "mutant-varlen-scale-by-dv", varlen_attention=scaled_by_dv("varlen_attention")
        ),
        ("VARLEN-EQ-PER-SEQ",),
    ),
    Mutant(
        "paged-scale-by-dv",
        "paged attention's default scale is 1/sqrt(Dv), the values' head dim (DeepSeek's 192/128)",
        derive(
            base,
            "mutant-paged-scale-by-dv",
            **paged_ops(paged_attention=scaled_by_dv("paged_attention")),
        ),
        ("PAGED-EQ-DENSE",),
    ),
]
# --- end of the issue-21 mutants ---------------------------------------------------------------

MUTANTS = [
    *REGIME_MUTANTS,
    varlen_mutant(
        "varlen-top-left",
        "causal masks in a packed batch are aligned top-left within each sequence",
        ("VARLEN-EQ-PER-SEQ",),
        top_left=True,
    ),
    varlen_mutant(
        "varlen-shared-max",
        "one softmax max for the whole packed batch: a sequence's weights underflow when "
        "another sequence has larger logits",
        ("VARLEN-NO-CROSS",),
        global_max=True,
    ),
    varlen_mutant(
        "varlen-key-offset",
        "each sequence's keys start one row early, so it sees the previous sequence's last key",
        ("VARLEN-EQ-PER-SEQ", "VARLEN-NO-CROSS"),
        shift=1,
    ),
    Mutant(
        "paged-write-wraps",
        "a slot of -1 is not skipped: numpy's negative index writes the pool's last slot",
        derive(
            base,
            "mutant-paged-write-wraps",
            paged_kv_cache=base.paged_kv_cache,
            paged_kv_write=write_wrapping,
        ),
        ("PAGED-WRITE-SLOTS",),
    ),
    paged_mutant(
        "paged-drops-window",
        "paged attention ignores the sliding window",
        ("PAGED-EQ-DENSE",),
        drop_window=True,
    ),
    paged_mutant(
        "paged-zero-times-nan",
        "reads every block of the table row and masks only the logits: 0 x NaN from a slot it "
        "does not own poisons the output",
        ("PAGED-IGNORES-UNOWNED",),
        whole_rows=True,
    ),
    paged_mutant(
        "paged-finite-mask",
        "masks the slots past seq_len with -1e4 instead of -inf, so a huge key leaks through",
        ("PAGED-IGNORES-UNOWNED",),
        whole_rows=True,
        mask_value=-1e4,
    ),
    paged_mutant(
        "paged-stale-blocks",
        "memoises block contents by block id: a freed block reused by another sequence is "
        "read with its old contents",
        ("PAGED-DECODE-EQ-RECOMPUTE",),
        memoise=True,
    ),
    option_mutant(
        "window-off-by-one",
        "the window lets each query see w + 1 keys",
        ("ATTN-WINDOW",),
        window_extra=1,
    ),
    option_mutant(
        "window-top-left",
        "the window is measured from the query's index instead of its absolute position",
        ("ATTN-WINDOW",),
        window_top_left=True,
    ),
    option_mutant(
        "softcap-after-mask",
        "the softcap is applied after the mask, so masked keys get logit -c instead of -inf",
        ("ATTN-SOFTCAP",),
        cap_after_mask=True,
    ),
    option_mutant(
        "softcap-exp-overflow",
        "tanh written as (e^2x - 1)/(e^2x + 1) overflows to NaN for large logits",
        ("ATTN-SOFTCAP",),
        cap_by_exp=True,
    ),
]


def cost_model(name: str, **broken: Any) -> CostSubject:
    """attnspec.specs.cost's serving functions (and attention_cost) with some replaced."""
    names = ("attention_cost", "varlen_attention_cost", "paged_decode_cost", "padding_waste")
    funcs = {f: getattr(cost, f) for f in names}
    return CostSubject(SimpleNamespace(name=f"mutant-{name}", **{**funcs, **broken}))


def varlen_cost_padded(q_lens, k_lens, Hq, Hkv, D, Dv, E, causal) -> Cost:
    n = len(q_lens)
    return cost.varlen_attention_cost(
        [max(q_lens)] * n, [max(k_lens)] * n, Hq, Hkv, D, Dv, E, causal
    )


def varlen_cost_empty_keys(q_lens, k_lens, Hq, Hkv, D, Dv, E, causal) -> Cost:
    right = cost.varlen_attention_cost(q_lens, k_lens, Hq, Hkv, D, Dv, E, causal)
    idle = sum(k for q, k in zip(q_lens, k_lens, strict=True) if not q)
    return Cost(right.flops, right.bytes + E * Hkv * idle * (D + Dv))


def paged_cost_no_table(seq_lens, Hq, Hkv, D, E, block_size, index_bytes=4) -> Cost:
    return cost.varlen_attention_cost([1] * len(seq_lens), seq_lens, Hq, Hkv, D, D, E, True)


def padding_waste_reversed(*args: Any) -> cost.PaddingWaste:
    right = cost.padding_waste(*args)
    return cost.PaddingWaste(padded=right.ragged, ragged=right.padded)


def counted(subject: CostSubject) -> CostSubject:
    """The same model paired with torch's counted attention (COST-RAGGED-COUNTED's subject)."""
    return CostSubject(subject.model, flop_counter())


COST_MUTANTS = [
    Mutant(
        "varlen-cost-padded",
        "varlen_attention_cost charges every sequence the longest one's lengths",
        cost_model("varlen-cost-padded", varlen_attention_cost=varlen_cost_padded),
        ("COST-RAGGED",),
    ),
    Mutant(
        "paged-cost-no-table",
        "paged_decode_cost leaves out the block table and seq_lens it reads",
        cost_model("paged-cost-no-table", paged_decode_cost=paged_cost_no_table),
        ("COST-RAGGED",),
    ),
    Mutant(
        "padding-waste-reversed",
        "padding_waste swaps the padded and ragged costs (negative waste)",
        cost_model("padding-waste-reversed", padding_waste=padding_waste_reversed),
        ("COST-RAGGED",),
    ),
    Mutant(
        "varlen-cost-empty-keys",
        "varlen_attention_cost charges sequences without queries for reading their keys",
        counted(cost_model("varlen-cost-empty-keys", varlen_attention_cost=varlen_cost_empty_keys)),
        ("COST-RAGGED-COUNTED",),
    ),
]
if flop_counter() is None:  # no FlopCounterMode to count with: COST-RAGGED-COUNTED skips
    COST_MUTANTS.pop()
MUTANTS += COST_MUTANTS
