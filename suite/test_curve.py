"""Latency vs throughput: the COST-LATENCY-CURVE clause on attnspec.specs.cost_curve, the shape of its
curves (memory stop, knees, longer contexts flatten), and the report's plot and CLI."""

import json
from itertools import pairwise

import pytest

import attnspec.specs.cost_curve as cost_curve
from attnspec.reports import curve
from attnspec.reports.__main__ import main
from attnspec.specs.cost import decoder_decode_step_cost
from attnspec.specs.cost_clauses import CostSubject
from attnspec.specs.decoder_weights import DecoderConfig
from attnspec.specs.presets import MODELS, PRESETS, model
from attnspec.suite.harness import verify

H100 = (989e12, 3.35e12)
LLAMA = model("Llama-3-8B")


def test_cost_latency_curve():
    """A decode step's curve: step cost, roof time, TPOT and throughput, memory stop, knees,
    and the hand-derived Llama-3-8B points on the H100."""
    verify("COST-LATENCY-CURVE", CostSubject(cost_curve))


def test_whole_model_configs_match_the_attention_presets():
    """Each whole-model config has the heads and head dim of the preset of the same name, and
    the parameter count its model card states (to 1%)."""
    presets = {p.name: p for p in PRESETS}
    billions = {"Llama-3-8B": 8.03, "Llama-3-70B": 70.6, "Mistral-7B": 7.24, "Qwen2-7B": 7.62,
                "Gemma-2-9B": 9.24, "Phi-3-mini": 3.82}  # fmt: skip
    for m in MODELS:
        p = presets[m.name]
        assert (m.n_heads, m.n_kv_heads, m.head_dim) == (p.Hq, p.Hkv, p.D), m.name
        assert m.param_count() / 1e9 == pytest.approx(billions[m.name], rel=0.01), m.name
        assert cost_curve.weight_bytes(m, 2) == 2 * m.param_count()


def test_weight_bytes_equal_the_tiny_decoders_parameters():
    """weight_bytes counts what DecoderConfig.param_count counts, tied or not."""
    for tied in (False, True):
        c = DecoderConfig(vocab=300, d_model=64, layers=3, n_heads=8, n_kv_heads=2, head_dim=16,
                          d_ff=96, tied_embeddings=tied, max_len=8)  # fmt: skip
        assert cost_curve.weight_bytes(c, 4) == 4 * c.param_count()


@pytest.mark.parametrize(("T", "stop"), [(1024, 476), (4096, 119), (16384, 29), (32768, 14)])
def test_memory_stop(T, stop):
    """Llama-3-8B bf16 on 80 GB: the curve ends at the last B whose caches fit beside the
    weights, the next B would not fit, and the last step reads nearly the whole memory."""
    c = cost_curve.latency_curve(LLAMA, T, 2, *H100, 80e9)
    assert (c.max_batch, c.points[-1].B, c.stopped) == (stop, stop, True)
    weights, kv = cost_curve.weight_bytes(LLAMA, 2), cost_curve.request_kv_bytes(LLAMA, T, 2)
    assert weights + stop * kv <= 80e9 < weights + (stop + 1) * kv
    assert all(p.fits for p in c.points)
    assert not cost_curve.curve_point(LLAMA, stop + 1, T, 2, *H100, 80e9).fits
    assert 0.9 * 80e9 / H100[1] < c.points[-1].tpot < 80e9 / H100[1]  # about memory / bandwidth


def test_knee_monotonicity():
    """Below the compute knee every step is memory-bound and from it on compute-bound; the knee
    moves to larger batches as the context grows, then never comes (the cache keeps the step
    memory-bound), and the half-throughput knee comes sooner as T grows."""
    knees = []
    for T in (16, 64, 128, 256, 1024):
        knee = cost_curve.compute_knee(LLAMA, T, 2, *H100)
        knees.append(knee)
        if knee is not None:
            assert not cost_curve.curve_point(LLAMA, knee - 1, T, 2, *H100).compute_bound
            for B in (knee, knee + 1, 2 * knee, cost_curve.MAX_BATCH):
                assert cost_curve.curve_point(LLAMA, B, T, 2, *H100).compute_bound
    found = [k for k in knees if k is not None]
    assert found == sorted(found) and len(found) >= 3 and knees[-1] is None
    halves = [cost_curve.half_throughput_knee(LLAMA, T, 2) for T in cost_curve.CONTEXTS]
    assert halves == sorted(halves, reverse=True) and halves[0] > halves[-1]


def test_half_throughput_knee_doubles_the_step():
    """At the half-throughput knee the caches read outweigh the weights: the step's bytes are
    at least twice the weights read, one batch earlier they are not."""
    T = 4096
    B = cost_curve.half_throughput_knee(LLAMA, T, 2)
    one = decoder_decode_step_cost(LLAMA, 1, T, 2).bytes
    per_request = decoder_decode_step_cost(LLAMA, 2, T, 2).bytes - one
    weights = one - per_request
    assert B * per_request >= weights > (B - 1) * per_request


def test_longer_contexts_flatten_the_curve():
    """At every batch size a longer context gives a slower step and lower throughput, and its
    curve's highest throughput is lower: the gain from batching fades with T."""
    curves = cost_curve.latency_curves(LLAMA, 2, *H100, 80e9)
    for short, long in pairwise(curves):
        for p in long.points:
            same_b = cost_curve.curve_point(LLAMA, p.B, short.T, 2, *H100)
            assert p.tpot > same_b.tpot and p.throughput < same_b.throughput
        assert max(p.throughput for p in long.points) < max(p.throughput for p in short.points)


def test_bad_curve_arguments_name_themselves():
    """A non-positive roof or memory size raises ValueError naming it."""
    with pytest.raises(ValueError, match="bandwidth"):
        cost_curve.curve_point(LLAMA, 1, 1024, 2, 989e12, 0)
    with pytest.raises(ValueError, match="memory_bytes"):
        cost_curve.max_batch(LLAMA, 1024, 2, -1.0)
    assert cost_curve.max_batch(LLAMA, 1024, 2, 1e9) == 0  # the weights alone do not fit


def test_cli_draws_predicted_curves_without_a_benchmark(tmp_path, capsys):
    """`python -m attnspec.reports --shapes M --device-spec K` prints the curves and writes latency.png,
    .md and .json with the same points; an unknown model or device is a one-line error."""
    code = main(
        ["--shapes", "llama-3-8b", "--device-spec", "h100-sxm", "--report-dir", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "memory stop B=119 23.6 ms, 5,046 tok/s" in out
    assert "half-throughput knee B=28 8.98 ms, 3,120 tok/s" in out
    png = tmp_path / "latency.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    block = json.loads((tmp_path / "latency.json").read_text())
    md = (tmp_path / "latency.md").read_text()
    points = [(c["T"], p["B"]) for c in block["predicted"][0]["curves"] for p in c["points"]]
    assert len(points) == sum("tok/s" in line for line in md.splitlines())
    assert (4096, 119) in points
    assert main(["--shapes", "GPT-2", "--device-spec", "h100-sxm"]) == 2
    assert main(["--device-spec", "h999"]) == 2
    assert "unknown device spec 'h999'" in capsys.readouterr().err


def test_bench_block_puts_measured_points_beside_the_prediction(tmp_path):
    """The report's latency block pairs each timed decode step with the roof's time for its
    shapes (measured / predicted), draws the tiny decoder's curve at the measured contexts on
    the same roof, and plots it with the model's curves."""
    from types import SimpleNamespace

    from attnspec.reports.hardware import DeviceRoof, h100_baseline
    from attnspec.reports.roofline import Record, analyse

    cpu = DeviceRoof(name="cpu", kind="cpu", device="cpu", dtype="float32", spec=None,
                     measured=None, peak_flops=100e9, bandwidth=10e9, peak_source="test",
                     bandwidth_source="test")  # fmt: skip
    dims = {"vocab": 1024, "d_model": 256, "layers": 4, "n_heads": 8, "n_kv_heads": 4,
            "head_dim": 32, "d_ff": 704}  # fmt: skip
    tiny = SimpleNamespace(**dims)
    rows = []
    for B, T in ((1, 128), (4, 128), (1, 1024)):
        c = decoder_decode_step_cost(tiny, B, T, 4)
        rec = Record(group="latency", variant="decode step", case=f"B={B} T={T}", impl="numpy",
                     device="cpu", dtype="float32", shape={"B": B, "T": T, "context": T} | dims,
                     flops=c.flops, bytes=c.bytes, baseline_flops=c.flops, baseline_bytes=c.bytes,
                     seconds=3 * c.bytes / 10e9)  # fmt: skip
        rows.append(analyse(rec, cpu, h100_baseline()))
    block = curve.bench_block(rows, {"cpu float32": cpu})
    assert [p["ratio"] for p in block["measured"]] == pytest.approx([3.0, 3.0, 3.0])
    (tiny_set,) = block["measured_curves"]
    assert [c["T"] for c in tiny_set["curves"]] == [128, 1024]
    first = tiny_set["curves"][0]["points"][0]
    assert first["tpot_s"] == pytest.approx(block["measured"][0]["predicted_tpot_s"])
    assert [s["model"] for s in block["predicted"]] == ["Llama-3-8B"] * 3
    text = curve.section_text(block, fmt="github")
    assert (
        "B=4 T=128" in text and " 3x " in text and "![latency vs throughput](latency.png)" in text
    )
    two_panels = block | {"predicted": block["predicted"][:1]}
    assert curve.plot(tmp_path / "latency.png", two_panels).stat().st_size > 20_000
