"""Cascade attention: a batch of sequences that share a prefix attends it once and merges.

FlashInfer's cascade / vLLM's cascade_attention: every sequence's queries attend the shared
prefix keys together in one non-causal call (the prefix is read once for the whole batch),
each sequence's queries attend its own suffix (causal, bottom-right), and the two partial
states are merged by their log-sum-exp (attnspec.specs.merge). The result must be each sequence's
attention over prefix + suffix. With a paged cache the prefix lives in shared blocks that
one block-table row points to, and the suffixes in each sequence's own blocks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from attnspec.specs import limits
from attnspec.specs.attention import logit_error
from attnspec.specs.clauses import clause
from attnspec.specs.dtypes import UNIT_ROUNDOFF
from attnspec.specs.merge import merge
from attnspec.specs.partial import Packed, run_op
from attnspec.specs.reference.lse import lse_dtype
from attnspec.specs.reference.serving import dense, sequence_attention, sequence_magnitude
from attnspec.specs.runner import Target
from attnspec.specs.strategies import normal, seeds
from attnspec.specs.tolerance import assert_close, budget
from attnspec.specs.varlen import require_option, softcaps, supported

LONG_PREFIX = (1025, 2049)  # a system prompt past 1024 keys (small heads)


@clause(
    "CASCADE-EQ-DENSE",
    "for a batch sharing a prefix, attending the prefix once (all queries, non-causal), each "
    "suffix on its own (causal) and merging the two states equals each sequence's attention "
    "over prefix + suffix, through varlen_attention or a paged cache with the prefix in shared "
    "blocks",
    needs=("varlen_attention|paged_attention", "merge_attention_states"),
)
def cascade_eq_dense(t: Target, data: st.DataObject) -> None:
    require_option(t, "lse")
    ops = [op for op in ("varlen_attention", "paged_attention") if t.has(op)]
    ops = [op for op in ops if not limits.current().causal(op, False)]  # the prefix: non-causal
    if not ops:
        return
    op = data.draw(st.sampled_from(ops), label="op")
    long = data.draw(st.sampled_from(["short", "long prefix", "short"]), label="prefix kind")
    B = data.draw(st.integers(1, 6), label="sequences")
    P = data.draw(
        st.sampled_from(LONG_PREFIX) if long == "long prefix" else st.integers(1, 48),
        label="prefix",
    )
    suffix = [data.draw(st.integers(1, 20), label="suffix") for _ in range(B)]
    q_lens = [data.draw(st.sampled_from([1, 1, min(s, 4), s]), label="queries") for s in suffix]
    Hkv = data.draw(st.integers(1, 2), label="Hkv")
    Hq = Hkv * data.draw(st.integers(1, 4), label="Hq/Hkv")
    D = limits.current().head_dim(
        data.draw(st.sampled_from((4, 8, 16) if long == "long prefix" else (8, 16, 64)), label="D")
    )
    opts: dict[str, Any] = {"scale": data.draw(st.sampled_from([None, 0.3]), label="scale")}
    if "softcap" in supported(t):
        opts["softcap"] = data.draw(st.none() | softcaps(), label="softcap")
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    size = data.draw(st.sampled_from([1.0, 4.0]), label="q, k size")
    q, k_pre, v_pre = t.inputs(
        normal(rng, (sum(q_lens), Hq, D), size),
        normal(rng, (P, Hkv, D), size),
        normal(rng, (P, Hkv, D)),
    )
    ks = [t.inputs(normal(rng, (s, Hkv, D), size))[0] for s in suffix]
    vs = [t.inputs(normal(rng, (s, Hkv, D)))[0] for s in suffix]
    cu_q = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
    shared = Packed(q, np.array([0, len(q)], np.int32), [k_pre], [v_pre], False, opts)
    own = Packed(q, cu_q, ks, vs, True, opts)
    o_pre, lse_pre, text_pre = run_op(t, data, op, shared, lse=True)
    o_suf, lse_suf, text_suf = run_op(t, data, op, own, lse=True)
    assert lse_pre is not None and lse_suf is not None
    o, lse, text = merge(t, (o_pre, lse_pre), (o_suf, lse_suf))
    top = float(np.max(np.abs(np.where(np.isfinite(lse), lse, 0.0))))
    slack = 2 * (UNIT_ROUNDOFF[t.dtype] + UNIT_ROUNDOFF[lse_dtype(t.dtype)] * top)  # the merge
    what = f"cascade over a {P}-key prefix: {text_pre}; {text_suf}; {text}"
    for b in range(B):
        rows = slice(int(cu_q[b]), int(cu_q[b + 1]))
        kb, vb = np.concatenate([k_pre, ks[b]]), np.concatenate([v_pre, vs[b]])
        args = (q[rows], kb, vb)
        full = {"causal": True, **opts}
        n = max(D, len(kb))
        tol = budget(
            t.dtype, n, sequence_attention(*args, **full),
            sequence_attention(*args, precision=t.dtype, **full), sequence_magnitude(*args, **full),
            logit_error(t.dtype, *map(dense, args), **full),
        ) + slack  # fmt: skip
        assert_close(
            o[rows], sequence_attention(*args, **full), dtype=t.dtype, n=n, tol=tol,
            magnitude=sequence_magnitude(*args, **full),
            what=t.where(f"{what}: sequence {b} ({P} + {suffix[b]} keys, {q_lens[b]} queries)"),
        )  # fmt: skip
