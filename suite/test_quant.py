"""Quantized KV-cache clauses (fp8 / int8 pages with scales), one test each."""

import attnspec.specs.cost as cost
from attnspec.specs.cost_clauses import CostSubject
from attnspec.suite.harness import verify

MODEL = CostSubject(cost)


def test_qkv_write_rounds(impl, dtype):
    """An 8-bit write stores saturate(round-to-nearest-even(x / scale)) and nothing else moves."""
    verify("QKV-WRITE-ROUNDS", impl, dtype)


def test_qkv_eq_dequant(impl, dtype):
    """Paged attention over an 8-bit pool equals float64 attention over its dequantized codes."""
    verify("QKV-EQ-DEQUANT", impl, dtype)


def test_qkv_error_model(impl, dtype):
    """Paged attention over an 8-bit pool stays within the derived quantization budget."""
    verify("QKV-ERROR-MODEL", impl, dtype)


def test_cost_quant_kv():
    """An 8-bit cache's bytes and decode intensity reproduce the Llama-3-8B hand numbers."""
    verify("COST-QUANT-KV", MODEL)


def test_declared_kv_dtypes_narrow_the_draws():
    """An implementation declaring limits kv_dtypes=("int8",) is only drawn int8 pools, and the
    quantized clauses run on it without a skip or failure."""
    from types import SimpleNamespace

    import attnspec.implementations.numpy_impl as base
    from attnspec.specs.profiles import KILL
    from attnspec.specs.runner import run_clause

    def int8_only(*args, kv_dtype=None, **kwargs):
        if kv_dtype not in (None, "int8"):
            raise ValueError(f"this kernel stores int8 pages only, not {kv_dtype}")
        return base.paged_kv_cache(*args, kv_dtype=kv_dtype, **kwargs)

    names = ("asarray", "to_numpy", "dtypes", "options", "paged_kv_write", "paged_attention")
    impl = SimpleNamespace(
        name="int8-only",
        limits={"kv_dtypes": ("int8",)},
        paged_kv_cache=int8_only,
        merge_attention_states=base.merge_attention_states,
        **{n: getattr(base, n) for n in names},
    )
    for clause_id in ("QKV-WRITE-ROUNDS", "QKV-EQ-DEQUANT", "QKV-ERROR-MODEL"):
        run_clause(clause_id, impl, settings_=KILL.__class__(KILL, max_examples=10))
