"""The held-cache probe and what it sizes: the flush, the calibration's streams, the roof."""

import dataclasses
import time

import pytest

from attnspec.reports import cache_probe, timing

KiB, MiB = 1 << 10, 1 << 20


def fake_rates(monkeypatch, by_size):
    """Make each view's re-read rate the table's (bytes/s by size, in KiB: the views start at
    8 KiB here, not 8 MiB, to keep the buffer small); record the views read."""
    seen = []

    def rate(buffer, nbytes, repeats):
        seen.append(nbytes // KiB)
        return by_size[nbytes // KiB]

    monkeypatch.setattr(cache_probe, "PROBE_START", 8 * KiB)
    monkeypatch.setattr(cache_probe, "_best_rate", rate)
    return seen


def test_the_bound_is_the_first_view_that_re_reads_at_memory_speed(monkeypatch):
    """Views double from PROBE_START; the first one HELD_MARGIN slower than the fastest before
    it, when the next is too, is the bound, the view before it the size held (the CI VM's
    shape: 54 GB/s held, 30 from memory)."""
    table = {8: 48e9, 16: 53e9, 32: 55e9, 64: 54e9, 128: 44e9, 256: 30e9, 480: 29e9}
    seen = fake_rates(monkeypatch, table)
    found = cache_probe.probe_cpu(480 * KiB)
    assert (found.bound, found.held, found.nominal) == (256 * KiB, 128 * KiB, 480 * KiB)
    assert seen == [8, 16, 32, 64, 128, 256, 480]  # 44 GB/s is within the margin of 55: held
    assert found.rates[f"{256 * KiB / MiB:.4g} MiB"] == 30e9


def test_one_slow_view_between_fast_ones_is_a_neighbour_not_the_bound(monkeypatch):
    """A view slowed by a neighbour's burst, with the next one fast again, sets no bound."""
    seen = fake_rates(monkeypatch, {8: 50e9, 16: 30e9, 32: 50e9, 64: 30e9, 128: 29e9, 200: 29e9})
    found = cache_probe.probe_cpu(200 * KiB)
    assert (found.bound, found.held) == (64 * KiB, 32 * KiB) and seen == [8, 16, 32, 64, 128]


def test_a_slow_last_view_bounds_the_cache_below_the_reported_size(monkeypatch):
    """Only the reported size itself re-read slower: it is the bound, the view before it held."""
    fake_rates(monkeypatch, {8: 50e9, 16: 50e9, 24: 30e9})
    found = cache_probe.probe_cpu(24 * KiB)
    assert (found.bound, found.held, found.nominal) == (24 * KiB, 16 * KiB, 24 * KiB)


def test_a_cache_held_whole_is_bounded_by_the_reported_size(monkeypatch):
    """When every view re-reads from the cache, the bound and the held size are the size the
    OS reports, and the roof's source says no view was slower."""
    seen = fake_rates(monkeypatch, {8: 50e9, 16: 50e9, 24: 49e9})
    found = cache_probe.probe_cpu(24 * KiB)
    assert found.bound == found.held == 24 * KiB and seen == [8, 16, 24]
    assert "no view re-read slower" in cache_probe.held_source(found.held, found.bound, 24 * KiB)


def test_a_real_probe_reads_every_view():
    """A real probe of a small reported cache times each view it reads, from 8 MiB."""
    found = cache_probe.probe_cpu(16 * MiB, repeats=1)
    assert list(found.rates) == ["8 MiB", "16 MiB"] and min(found.rates.values()) > 0
    assert found.nominal == 16 * MiB


def test_the_flush_and_streams_follow_the_bound():
    """A flush reads twice the cache bound (at least MIN_FLUSH_BYTES); a stream buffer is
    STREAM_FACTOR times it: the reported size only when nothing was probed."""
    calibrate = pytest.importorskip("attnspec.reports.calibrate", exc_type=ImportError)
    assert timing.streaming_bytes("cpu", cache=256 * MiB) == 512 * MiB
    assert timing.streaming_bytes("cpu", cache=8 * MiB) == timing.MIN_FLUSH_BYTES
    assert timing.streaming_bytes("cpu") == max(2 * timing.cpu_cache_bytes(), 64 * MiB)
    assert calibrate.stream_bytes("cpu", 256 * MiB) == calibrate.STREAM_FACTOR * 256 * MiB


def test_the_flusher_reads_without_writing(monkeypatch):
    """The flush sums its buffer (torch's threads; numpy without torch) and leaves it as it was."""
    import sys

    monkeypatch.setattr(timing, "MIN_FLUSH_BYTES", 2 * MiB)
    for torch_missing in (False, True):
        if torch_missing:
            monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
        flush = timing.flusher("cpu", cache=1 * MiB)
        buffer = flush.__closure__[0].cell_contents  # (n,): the buffer it reads
        before = buffer.sum()
        assert float(flush()) == float(before) > 0
        assert buffer.shape[0] * 4 == 2 * MiB  # twice the cache


def test_the_roof_names_the_probed_size_and_the_flush_evicts_the_bound(monkeypatch):
    """A CPU roof's cache is the largest view that re-read at cache speed (the one before the
    bound); its source names the bound and the size sysfs reports. The flush evicts the bound."""
    pytest.importorskip("torch", reason="torch is not installed: detection uses it")
    import types

    import attnspec.reports.detect as detect
    from attnspec.reports.bench_state import BenchState
    from attnspec.suite.test_device import fake_measured

    m = dataclasses.replace(
        fake_measured("cpu:x"),
        cache_bytes=256 * MiB,
        cache_held=128 * MiB,
        cache_nominal=480 * MiB,
        cache_rates={"128 MiB": 50e9, "256 MiB": 30e9},
    )
    monkeypatch.setattr(detect, "calibrate", lambda *a, **k: m)
    roof = detect.resolve_device("cpu", env={})
    assert roof.cache_bytes == 128 * MiB
    assert (
        "re-reads of 128 MiB ran at cache speed, of 256 MiB at main-memory speed; sysfs says "
        "480 MiB" in roof.cache_source
    )
    state = types.SimpleNamespace(roof=lambda device, dtype: roof)
    assert BenchState.cache_bound(state, "cpu") == 256 * MiB  # type: ignore[arg-type]


def test_samples_stop_past_their_share_of_the_session(monkeypatch, tmp_path):
    """A sample asked for right after another is skipped: the samples keep to SAMPLE_SHARE."""
    pytest.importorskip("torch", reason="torch is not installed: samples use it")
    from attnspec.reports.ceiling import SessionCeiling
    from attnspec.suite.test_ceiling import cpu_roof

    roof = cpu_roof(tmp_path, monkeypatch)
    ceiling = SessionCeiling(lambda device: lambda: time.sleep(0.02))  # a 20 ms flush
    ceiling.sample(roof)
    assert ceiling.spent >= 0.02  # the whole sample counts, its flush included
    ceiling.spent = 1.0  # as if the first sample took a second: past its share of the session
    ceiling.sample(roof)
    assert ceiling.count[(roof.device, roof.dtype)] == 1
    ceiling.started -= 100.0  # 100 s later: 1 s of sampling is a hundredth
    ceiling.sample(roof)
    assert ceiling.count[(roof.device, roof.dtype)] == 2
