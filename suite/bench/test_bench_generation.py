"""Tiny-decoder generation: TTFT, TPOT and throughput, and cached generation vs full recompute.

Generation is teacher-forced: the N continuation tokens are drawn up front, so every
implementation does exactly the same work (a greedy pick costs one argmax per step). TPOT
follows MLPerf: (total - TTFT) / (tokens - 1), where the first token comes from the prefill.
"""

import numpy as np
import pytest

from attnspec.reports import timing
from attnspec.reports.timing import FLOOR_REPEATS
from attnspec.specs.cost import (
    Cost,
    decoder_decode_step_cost,
    decoder_prefill_cost,
    decoder_prefill_traffic,
)
from attnspec.specs.decoder_weights import DecoderConfig, make_weights
from attnspec.specs.dtypes import BYTES_PER_ELEMENT, round_to
from attnspec.specs.reference.decoder import decoder_forward
from attnspec.specs.tolerance import assert_close
from attnspec.suite.bench.common import matmul_probe, need

pytestmark = [pytest.mark.bench, pytest.mark.benchmark(group="generation")]

CLAUSE = "DEC-CACHED-EQ-FULL"


class Setup:
    """The model built from seeded weights, and fresh prompts in the implementation's arrays."""

    def __init__(self, impl, dtype, case):
        need(impl, dtype, "decoder")
        self.impl, self.dtype = impl, dtype
        self.B, self.P, self.N = case["B"], case["P"], case["N"]
        self.config = DecoderConfig(**case["model"], tied_embeddings=False, max_len=self.P + self.N)
        drawn = make_weights(self.config, seed=0)
        self.weights = {name: round_to(a, dtype) for name, a in drawn.items()}
        native = {name: impl.asarray(a, dtype) for name, a in self.weights.items()}
        self.model = impl.decoder(self.config, native)
        self.rng = np.random.default_rng(0)
        self.device = timing.device_of(impl)
        self.case = f"B={self.B} P={self.P} N={self.N}"
        self.shape = {k: v for k, v in case.items() if k != "model"} | case["model"]
        try:
            self.tokens()
        except (TypeError, ValueError) as exc:
            pytest.skip(f"{impl.name}.asarray(tokens, 'int64') is not supported: {exc}")

    def tokens(self):
        """A fresh (B, P + N - 1) batch of token ids: the prompt and the continuation."""
        ids = self.rng.integers(0, self.config.vocab, (self.B, self.P + self.N - 1))  # (B, T)
        return (self.impl.asarray(ids, "int64"),)

    def check(self, outs, tokens):
        """Each step's last-position logits equal the float64 full forward's at that position."""
        impl, P, N = self.impl, self.P, self.N
        got = np.concatenate(
            [np.asarray(impl.to_numpy(o), np.float64) for o in outs], axis=1
        )  # (B, N, vocab)
        seq = np.asarray(impl.to_numpy(tokens)).astype(np.int64)  # (B, P + N - 1)
        expected = decoder_forward(self.config, self.weights, seq)[:, P - 1 :]  # (B, N, vocab)
        baseline = decoder_forward(self.config, self.weights, seq, precision=self.dtype)[:, P - 1 :]
        c = self.config
        n = max(c.d_model, c.q_dim, c.d_ff, P + N)
        if got.shape != expected.shape:
            raise AssertionError(f"logits of shape {got.shape}, expected {expected.shape}")
        what = f"{impl.name} decoder {self.case}"
        assert_close(got, expected, dtype=self.dtype, n=n, baseline=baseline, what=what)

    def steps(self, E, cached):
        """(FLOPs, bytes) of each model call generating N tokens, cached or recomputed."""
        c, B, P, N = self.config, self.B, self.P, self.N
        if cached:
            costs = [decoder_prefill_cost(c, B, P, E)]
            costs += [decoder_decode_step_cost(c, B, P + j, E) for j in range(N - 1)]
        else:
            costs = [decoder_prefill_cost(c, B, P + j, E) for j in range(N)]
        return [[float(x.flops), float(x.bytes)] for x in costs]


def floors(bench, s):
    """Per-call floors (prefill of one token, one decode step) of a model as deep as the one
    benchmarked with every width 2: the fixed cost of calling it at all. None when untimed."""
    if not bench.timed:
        return None, None
    c = s.config
    tiny = DecoderConfig(vocab=2, d_model=2, layers=c.layers, n_heads=1, n_kv_heads=1,
                         head_dim=2, d_ff=2, tied_embeddings=False, max_len=FLOOR_REPEATS + 4)  # fmt: skip
    drawn = make_weights(tiny, seed=0)
    model = s.impl.decoder(
        tiny, {n: s.impl.asarray(round_to(a, s.dtype), s.dtype) for n, a in drawn.items()}
    )
    token = s.impl.asarray(np.zeros((1, 1), np.int64), "int64")  # (1, 1)
    prefill = timing.median_seconds(s.device, lambda: model.prefill(token), FLOOR_REPEATS)
    _, cache = model.prefill(token)
    step = timing.median_seconds(s.device, lambda: model.decode(token, cache), FLOOR_REPEATS)
    return prefill, step


def total(steps):
    return Cost(sum(f for f, _ in steps), sum(b for _, b in steps))


def cached_generation(s, marks):
    """Prefill P tokens, then decode N - 1 one at a time; last-position logits of each call."""

    def run(tokens):
        t0 = timing.now(s.device)
        logits, cache = s.model.prefill(tokens[:, : s.P])
        outs = [logits[:, -1:]]
        ttft = timing.now(s.device) - t0
        for j in range(s.N - 1):
            logits, cache = s.model.decode(tokens[:, s.P + j : s.P + j + 1], cache)
            outs.append(logits[:, -1:])
        marks.append((ttft, timing.now(s.device) - t0))
        return outs

    return run


def full_recompute(s):
    """N full forward passes over the growing sequence; the last-position logits of each."""

    def run(tokens):
        return [s.model.forward(tokens[:, : s.P + j])[:, -1:] for j in range(s.N)]

    return run


def mlp_probe(bench, s, tokens):
    """The decoder's largest product, h @ w13 (the fused gate/up projection) over `tokens`
    rows, timed alone: the BLAS limit of a step that is mostly such small products."""
    c = s.config
    what = "h@w13 (gate/up projection)"
    return matmul_probe(
        bench, s.impl, s.dtype, 1, tokens, c.d_model, 2 * c.d_ff, what, right_transposed=False
    )


def iqr(values):
    q1, q3 = np.percentile(values, [25, 75])
    return float(q3 - q1)


def test_generation(bench, impl, dtype, case):
    """TTFT, TPOT and throughput of cached generation; rows carry prefill and decode-step costs."""
    s = Setup(impl, dtype, case)
    marks = []
    timed = bench.run(cached_generation(s, marks), s.tokens, device=s.device)
    check = bench.verify(CLAUSE, lambda: s.check(timed.result, *timed.args))
    prefill_floor, step_floor = floors(bench, s)
    kept = marks[-timed.rounds :] if timed.rounds else []
    ttft = [a for a, _ in kept]
    tpot = [(b - a) / (s.N - 1) for a, b in kept]
    extras = {"B": s.B, "P": s.P, "N": s.N}
    if kept:
        median_total = float(np.median([b for _, b in kept]))
        extras |= {
            "ttft_s": float(np.median(ttft)),
            "tpot_s": float(np.median(tpot)),
            "total_s": median_total,
            "throughput_tok_s": s.B * s.N / median_total,
        }
    common = dict(
        impl=impl.name,
        device=s.device,
        dtype=dtype,
        group="generation",
        case=s.case,
        shape=s.shape,
        clause=CLAUSE,
        check=check,
    )
    bench.record(
        timed,
        variant="TTFT (prefill)",
        cost=lambda E: decoder_prefill_traffic(s.config, s.B, s.P, E),
        seconds=extras.get("ttft_s"),
        spread=iqr(ttft) if ttft else None,
        extras=extras | {"probe": mlp_probe(bench, s, s.B * s.P)},
        floor=prefill_floor,
        **common,
    )
    record = bench.record(
        timed,
        variant="TPOT (decode step)",
        cost=lambda E: Cost(
            total(s.steps(E, True)[1:]).flops / (s.N - 1),
            total(s.steps(E, True)[1:]).bytes / (s.N - 1),
        ),
        seconds=extras.get("tpot_s"),
        spread=iqr(tpot) if tpot else None,
        extras=extras | {"probe": mlp_probe(bench, s, s.B)},
        floor=step_floor,
        **common,
    )
    bench.fail_if(record)


def compare(bench, impl, dtype, case, *, cached):
    s = Setup(impl, dtype, case)
    run = cached_generation(s, []) if cached else full_recompute(s)
    timed = bench.run(run, s.tokens, device=s.device)
    check = bench.verify(CLAUSE, lambda: s.check(timed.result, *timed.args))
    E = BYTES_PER_ELEMENT[dtype]
    record = bench.record(
        timed,
        impl=impl.name,
        device=s.device,
        dtype=dtype,
        group="cached vs recompute",
        variant="cached" if cached else "recompute",
        case=s.case,
        shape=s.shape,
        cost=lambda e: total(s.steps(e, cached)),
        clause=CLAUSE,
        check=check,
        extras={
            "steps": s.steps(E, cached),
            "baseline_steps": s.steps(2, cached),
            "probe": mlp_probe(bench, s, s.B if cached else s.B * s.P),
        },
    )
    bench.fail_if(record)


@pytest.mark.benchmark(group="cached vs recompute")
def test_cached_generation(bench, impl, dtype, case):
    """N new tokens through the KV cache: one prefill, then N - 1 single-token decodes."""
    compare(bench, impl, dtype, case, cached=True)


@pytest.mark.benchmark(group="cached vs recompute")
def test_full_recompute(bench, impl, dtype, case):
    """N new tokens without a cache: a full forward over the whole sequence for each."""
    compare(bench, impl, dtype, case, cached=False)
