"""Causal linear attention clauses, one test each, run on every selected implementation and dtype."""

from attnspec.suite.harness import verify


def test_lin_ref(impl, dtype):
    """The parallel form equals the float64 prefix-accumulator definition, causal or not."""
    verify("LIN-REF", impl, dtype)


def test_lin_no_future(impl, dtype):
    """No form's output at position i changes when positions after i do."""
    verify("LIN-NO-FUTURE", impl, dtype)


def test_lin_forms_agree(impl, dtype):
    """Recurrent, chunked (any chunk size) and parallel forms give the same outputs."""
    verify("LIN-FORMS-AGREE", impl, dtype)


def test_lin_split_resume(impl, dtype):
    """Running a sequence in pieces with the carried state equals one pass."""
    verify("LIN-SPLIT-RESUME", impl, dtype)


def test_lin_decode_eq_prefill(impl, dtype):
    """Recurrent decode steps after a chunked prefill equal running all tokens at once."""
    verify("LIN-DECODE-EQ-PREFILL", impl, dtype)
