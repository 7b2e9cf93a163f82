"""The tiny decoder's decode step at a few batch sizes and contexts: the measured points of the
latency-vs-throughput plot, each beside the roofline's time for the same shapes.

Each case prefills B sequences of T tokens once (untimed), then times single-token decode
steps through that cache, one new token per round (the cache grows by one token per call; the
cost is taken at the median context of the timed calls). TPOT is the step time and throughput
B / TPOT. The report (attnspec.reports.curve) puts the rows beside the cost model's curve on the same
roof and draws latency.png.
"""

import numpy as np
import pytest

from attnspec.specs.cost import decoder_decode_step_traffic
from attnspec.specs.reference.decoder import decoder_forward
from attnspec.specs.tolerance import assert_close
from attnspec.suite.bench.test_bench_generation import CLAUSE, Setup, floors, mlp_probe

pytestmark = [pytest.mark.bench, pytest.mark.benchmark(group="latency")]

ROUNDS = 3  # timed steps per case (after an estimate call and a warm-up)
SPARE = ROUNDS + 4  # cache slots past T: every call of the timing loop appends one token


def test_decode_step(bench, impl, dtype, case):
    """One decode step of B requests with T cached tokens: TPOT and throughput, row 0 checked."""
    B, T = case["B"], case["T"]
    s = Setup(impl, dtype, {"B": B, "P": T, "N": SPARE, "model": case["model"]})
    rng = np.random.default_rng(1)
    fed = [rng.integers(0, s.config.vocab, (B, T))]  # (B, T), then one (B, 1) per call
    _, cache = s.model.prefill(impl.asarray(fed[0], "int64"))
    state = {"cache": cache}
    contexts: list[int] = []

    def fresh():
        if len(fed) > SPARE:
            raise RuntimeError(f"the timing loop made more than {SPARE - 1} decode calls")
        fed.append(rng.integers(0, s.config.vocab, (B, 1)))
        return (impl.asarray(fed[-1], "int64"),)

    def step(token):
        contexts.append(T + len(contexts))  # tokens cached before this call
        logits, state["cache"] = s.model.decode(token, state["cache"])
        return logits

    timed = bench.run(step, fresh, device=s.device, max_rounds=ROUNDS)
    context = int(np.median(contexts[-(timed.rounds or 1) :]))

    def check():
        got = np.asarray(impl.to_numpy(timed.result), np.float64)[:1, -1]  # (1, vocab)
        seq = np.concatenate(fed[: len(contexts) + 1], axis=1)[:1]  # (1, T + calls)
        expected = decoder_forward(s.config, s.weights, seq)[:, -1]  # (1, vocab)
        c = s.config
        n = max(c.d_model, c.q_dim, c.d_ff, seq.shape[1])
        what = f"{impl.name} decoder decode step B={B} T={T}, row 0"
        assert_close(got, expected, dtype=dtype, n=n, what=what)

    _, step_floor = floors(bench, s)
    record = bench.record(
        timed,
        impl=impl.name,
        device=s.device,
        dtype=dtype,
        group="latency",
        variant="decode step",
        case=f"B={B} T={T}",
        shape={"B": B, "T": T, "context": context} | case["model"],
        cost=lambda E: decoder_decode_step_traffic(s.config, B, context, E),
        clause=CLAUSE,
        check=bench.verify(CLAUSE, check),
        extras={"probe": mlp_probe(bench, s, B)},
        floor=step_floor,
    )
    bench.fail_if(record)
