"""The roofline report's judgements on hand-made records: one roof per row, levels, notes, spread."""

from types import SimpleNamespace

import pytest

from attnspec.reports import bench_state, render
from attnspec.reports.roofline import Record, analyse, repeatability, section_spread
from attnspec.specs.cost import tiled_attention_traffic

MiB = 1 << 20
CPU = SimpleNamespace(
    name="cpu", peak_flops=100e9, bandwidth=10e9, cache_name="LLC", cache_bytes=32 * MiB,
    cache_bandwidth=100e9,
)  # fmt: skip
H100 = SimpleNamespace(
    name="h100", peak_flops=989e12, bandwidth=3.35e12, cache_name="L2", cache_bytes=50 * MiB,
    cache_bandwidth=None,
)  # fmt: skip


def record(flops, nbytes, seconds, *, rereads=0.0, working_set=0.0, run=1, **extra):
    return Record(
        group="g", variant="v", case="c", impl="torch", device="cpu", dtype="float32",
        shape={}, flops=flops, bytes=nbytes, baseline_flops=flops, baseline_bytes=nbytes,
        seconds=seconds, rereads=rereads, working_set=working_set,
        baseline_rereads=rereads, baseline_working_set=working_set, run=run, **extra,
    )  # fmt: skip


def test_fraction_and_verdict_use_the_same_roof():
    """% of roof is the slowest roof's time over the measured time, and the verdict names it."""
    row = analyse(record(1e9, 1e9, 0.2), CPU, H100)  # 0.01 s compute, 0.1 s memory
    assert row.device.fraction == pytest.approx(0.5)
    assert row.device.verdict == "memory-bound (DRAM)"
    assert row.device.byte_rate == pytest.approx(5e9)


def test_rereads_that_fit_are_cache_traffic():
    """Re-reads whose working set fits the LLC are served there: the verdict names the LLC."""
    fits = analyse(record(1e9, 1e8, 1.0, rereads=1e11, working_set=MiB), CPU, H100)
    assert fits.device.dram_bytes == 1e8 and fits.device.verdict == "memory-bound (LLC)"
    spills = analyse(record(1e9, 1e8, 1.0, rereads=1e11, working_set=64 * MiB), CPU, H100)
    assert spills.device.dram_bytes == 1e8 + 1e11 and spills.device.verdict == "memory-bound (DRAM)"


def test_tiled_and_sdpa_rows_agree_on_h100():
    """Tiled 128x128 attention at T=2048 bf16 is compute-bound on H100, as SDPA is."""
    t = tiled_attention_traffic(1, 8, 8, 2048, 2048, 64, 64, 2, True, 128, 128)
    row = analyse(
        record(t.flops, t.compulsory, None, rereads=t.rereads, working_set=t.working_set),
        CPU,
        H100,
    )
    assert row.baseline.verdict == "compute-bound"
    assert row.baseline.intensity == pytest.approx(512.25)


def test_above_the_roof_says_recalibrate():
    """A row faster than its roof never prints a bare percentage over 100."""
    row = analyse(record(1e9, 1e9, 0.05), CPU, H100)
    assert row.device.fraction == pytest.approx(2.0)
    assert render.percent(row.device.fraction) == "above roof"
    assert row.notes == ["above calibrated roof (2.00x): recalibrate"]
    at = analyse(record(1e9, 1e9, 0.0995), CPU, H100)  # 1.005x: within the ceiling's precision
    assert render.percent(at.device.fraction) == "100%"
    assert at.notes == ["at the roof (1.005x, within the ceiling's 5%)"]


def test_overhead_bound_rows_name_their_floor():
    """A row whose per-call floor is most of its time is overhead-bound, floor in the note."""
    row = analyse(record(1e3, 1e3, 40e-6, floor_seconds=30e-6), CPU, H100)
    assert row.device.verdict == "overhead-bound"
    assert row.notes == ["per-call floor 30 µs"]


def test_measured_roofs_call_rows_near_the_ridge_balanced():
    """On a measured roof (its ridge moves with the machine) compute and memory times within
    RIDGE_BAND are "balanced"; a spec roof keeps the plain verdict; far from the ridge, both do."""
    measured = SimpleNamespace(**vars(CPU), bandwidth_source="measured (best of 5 streams)")
    near = record(1.2e9, 1e8, 0.05)  # compute 12 ms, DRAM 10 ms: within RIDGE_BAND (1.25x)
    assert analyse(near, measured, H100).device.verdict == "balanced (compute ≈ DRAM)"
    assert analyse(near, CPU, H100).device.verdict == "compute-bound"
    far = record(1.5e9, 1e8, 0.05)  # compute 15 ms, DRAM 10 ms
    assert analyse(far, measured, H100).device.verdict == "compute-bound"


def test_slow_rows_under_target_say_why():
    """A row of 50 µs or more under 60% of its roof carries the single-op probe's figure."""
    probe = {"what": "X@W", "flops": 1e9, "bytes": 1e6, "seconds": 0.04}  # 25% of peak
    row = analyse(record(1e9, 1e6, 0.05, extras={"probe": probe}), CPU, H100)
    assert row.device.verdict == "compute-bound" and row.device.fraction == pytest.approx(0.2)
    assert row.notes == [
        "below 60% of roof, the BLAS limit: X@W alone reaches 25% (single-op probe)"
    ]


def test_repeatability_reports_spread_and_verdict_changes():
    """Per row: % of roof in every pass, the spread, and whether the verdict moved."""
    floors = (None, None, 0.15)  # the third pass: the per-call floor dominates
    rows = [
        analyse(record(1e9, 1e9, s, run=i + 1, floor_seconds=f), CPU, H100)
        for i, (s, f) in enumerate(zip((0.2, 0.25, 0.2), floors, strict=True))
    ]
    (entry,) = repeatability(rows)
    assert entry["runs"] == [1, 2, 3] and entry["verdict_changed"]
    assert entry["spread"] == pytest.approx(0.5 - 0.4)
    (section,) = section_spread([entry])
    assert section["verdict_changes"] == 1 and section["rows"] == 1
    text = render.repeat_text([entry], [section])
    assert "CHANGED" in text and "10 pp" in text


@pytest.mark.parametrize("value", ["0", "-1", "three"])
def test_bad_repeat_count_is_a_usage_error(value):
    """--repeat-report takes a whole number >= 1."""
    config = SimpleNamespace(getoption=lambda name: value)
    with pytest.raises(pytest.UsageError, match="--repeat-report"):
        bench_state.repeat_option(config)
