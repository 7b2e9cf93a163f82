"""The session ceiling: samples beside the benchmarks raise a measured roof, never a given one."""

import dataclasses

import pytest

pytest.importorskip("torch", reason="torch is not installed: calibration and samples use it")

import attnspec.reports.calibrate as calibrate
import attnspec.reports.detect as detect
from attnspec.reports import timing
from attnspec.reports.ceiling import SessionCeiling
from attnspec.suite.test_device import fake_measured


def cpu_roof(tmp_path, monkeypatch, **overrides):
    """The CPU roof resolved from a fake calibration (1 TB/s, 100 TFLOP/s) cached in tmp_path."""
    m = dataclasses.replace(
        fake_measured(key=calibrate.device_key("cpu")),
        gemm_method="numpy n=64",
        gemm_dtype="float32",
    )
    monkeypatch.setattr(calibrate, "measure", lambda *a, **k: m)
    monkeypatch.setenv(calibrate.CALIBRATION_ENV, str(tmp_path / "calibration.json"))
    monkeypatch.delenv(detect.PEAK_ENV, raising=False)
    monkeypatch.delenv(detect.BANDWIDTH_ENV, raising=False)
    return detect.resolve_device("cpu", dtype="float32", **overrides)


def test_a_faster_sample_raises_the_measured_roof_and_is_kept(tmp_path, monkeypatch):
    """A sample above the calibration becomes the report's one bandwidth (its source says so)
    and the calibration file keeps it, so the next session starts from it."""
    roof = cpu_roof(tmp_path, monkeypatch)
    ceiling = SessionCeiling(timing.flusher)
    key = (roof.device, roof.dtype)
    ceiling.best[key] = {"session gemv": [9e12, 3e12], "session numpy n=64": [60e12, 50e12]}
    ceiling.count[key] = 4
    raised = ceiling.raised(roof)
    # the second best counts (reached twice): one glitched 9 TB/s sample can't set the roof
    assert raised.bandwidth == 3e12 and "ceiling: session gemv" in raised.bandwidth_source
    assert raised.peak_flops == roof.peak_flops == 100e12  # a slower GEMM sample changes nothing
    ceiling.persist()
    again = detect.resolve_device("cpu", dtype="float32")
    assert again.bandwidth == 3e12 and again.measured.ceiling_samples == 4
    ceiling.best[key] = {"session gemv": [2e12, 1e12]}
    ceiling.persist()
    assert detect.resolve_device("cpu", dtype="float32").bandwidth == 3e12  # only rises


def test_a_sample_within_the_margin_moves_nothing(tmp_path, monkeypatch):
    """A sample less than RAISE_MARGIN above the roof is jitter: the roof, and so the ridge and
    the verdicts beside it, stay put."""
    roof = cpu_roof(tmp_path, monkeypatch)
    ceiling = SessionCeiling(timing.flusher)
    ceiling.best[(roof.device, roof.dtype)] = {"session numpy n=64": [104e12, 103e12]}
    assert ceiling.raised(roof).peak_flops == 100e12
    ceiling.best[(roof.device, roof.dtype)] = {"session numpy n=64": [107e12, 106e12]}
    assert ceiling.raised(roof).peak_flops == 106e12


def test_a_given_bandwidth_is_never_raised(tmp_path, monkeypatch):
    """--bandwidth (or a spec-table figure) is the user's roof: samples leave it alone."""
    roof = cpu_roof(tmp_path, monkeypatch, bandwidth=5e11)
    ceiling = SessionCeiling(timing.flusher)
    ceiling.best[(roof.device, roof.dtype)] = {
        "session gemv": [3e12, 3e12],
        "session numpy n=64": [2e14, 2e14],
    }
    raised = ceiling.raised(roof)
    assert raised.bandwidth == 5e11 and raised.peak_flops == 2e14


def test_samples_time_real_streams_and_the_calibrated_gemm(tmp_path, monkeypatch):
    """A real sample on the CPU times both matrix-vector streams and the calibration's GEMM."""
    flushes = []
    roof = cpu_roof(tmp_path, monkeypatch)  # 1 MiB buffers, the calibration's
    ceiling = SessionCeiling(lambda device: lambda: flushes.append(device), share=None)
    ceiling.sample(roof)
    ceiling.sample(roof)
    best = ceiling.best[(roof.device, roof.dtype)]
    assert set(best) == {"session gemv", "session gemv-t", "session numpy n=64"}
    assert all(len(top) == 2 and min(top) > 0 for top in best.values())
    assert ceiling.count[(roof.device, roof.dtype)] == 2
    assert flushes == ["cpu", "cpu"]  # one flush per sample: the two buffers evict each other
