"""Serving-shape clauses (varlen batches, the paged KV cache, window and softcap), one test each."""

import pytest

import attnspec.specs.cost as cost
from attnspec.implementations.discovery import flop_counter
from attnspec.specs.cost_clauses import CostSubject
from attnspec.suite.harness import verify

MODEL = CostSubject(cost)


def test_varlen_eq_per_seq(impl, dtype):
    """Packed varlen attention equals each sequence's own dense attention."""
    verify("VARLEN-EQ-PER-SEQ", impl, dtype)


def test_varlen_no_cross(impl, dtype):
    """A sequence's varlen outputs do not depend on the other sequences in the batch."""
    verify("VARLEN-NO-CROSS", impl, dtype)


def test_paged_write_slots(impl, dtype):
    """paged_kv_write changes exactly the mapped slots and skips -1 padding."""
    verify("PAGED-WRITE-SLOTS", impl, dtype)


def test_paged_eq_dense(impl, dtype):
    """Paged attention equals dense attention over each sequence's gathered keys."""
    verify("PAGED-EQ-DENSE", impl, dtype)


def test_paged_ignores_unowned(impl, dtype):
    """Garbage in unowned blocks and past seq_len never reaches a sequence's output."""
    verify("PAGED-IGNORES-UNOWNED", impl, dtype)


def test_paged_decode_eq_recompute(impl, dtype):
    """A serving loop through the paged cache equals full recompute at every step."""
    verify("PAGED-DECODE-EQ-RECOMPUTE", impl, dtype)


def test_attn_window(impl, dtype):
    """Windowed attention equals the reference and ignores keys outside the window."""
    verify("ATTN-WINDOW", impl, dtype)


def test_attn_softcap(impl, dtype):
    """Soft-capped attention equals the reference and stays finite for logits of 1e5."""
    verify("ATTN-SOFTCAP", impl, dtype)


def test_cost_ragged():
    """Ragged, paged and padded decode costs reproduce the hand-derived long-tail batch."""
    verify("COST-RAGGED", MODEL)


def test_cost_ragged_counted(dtype):
    """varlen_attention_cost equals FlopCounterMode's per-sequence count and the tensors' sizes."""
    counter = flop_counter()
    if counter is None:
        pytest.skip("torch is not installed: there is no FlopCounterMode to count with")
    verify("COST-RAGGED-COUNTED", CostSubject(cost, counter), dtype)
