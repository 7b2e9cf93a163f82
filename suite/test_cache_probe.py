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
    """Views double from 8 MiB; the first one HELD_MARGIN slower than the fastest before it is
    the bound, and the probe stops there (the CI VM's shape: 54 GB/s held, 30 from memory)."""
    seen = fake_rates(monkeypatch, {8: 48e9, 16: 53e9, 32: 55e9, 64: 54e9, 128: 44e9, 256: 30e9})
    found = cache_probe.probe_cpu(480 * KiB)
    assert (found.bound, found.nominal) == (256 * KiB, 480 * KiB)
    assert seen == [8, 16, 32, 64, 128, 256]  # 44 GB/s is within the margin of 55: held
    assert found.rates[f"{256 * KiB / MiB:.4g} MiB"] == 30e9


def test_a_cache_held_whole_is_bounded_by_the_reported_size(monkeypatch):
    """When every view re-reads from the cache, the bound is the size the OS reports."""
    seen = fake_rates(monkeypatch, {8: 50e9, 16: 50e9, 24: 49e9})
    found = cache_probe.probe_cpu(24 * KiB)
    assert found.bound == 24 * KiB and seen == [8, 16, 24]


def test_a_real_probe_reads_every_view(monkeypatch):
    """A real probe of a small reported cache gives a positive rate for each view it read."""
    monkeypatch.setattr(cache_probe, "PROBE_REPEATS", 1)
    found = cache_probe.probe_cpu(16 * MiB, repeats=1)
    assert found.bound in (8 * MiB, 16 * MiB) and found.nominal == 16 * MiB
    assert next(iter(found.rates)) == "8 MiB" and min(found.rates.values()) > 0


def test_the_flush_and_streams_follow_the_held_size():
    """A flush reads twice the held cache (at least MIN_FLUSH_BYTES); a stream buffer is
    STREAM_FACTOR times it: the reported size only when nothing was probed."""
    calibrate = pytest.importorskip("attnspec.reports.calibrate", exc_type=ImportError)
    assert timing.streaming_bytes("cpu", cache=256 * MiB) == 512 * MiB
    assert timing.streaming_bytes("cpu", cache=8 * MiB) == timing.MIN_FLUSH_BYTES
    assert timing.streaming_bytes("cpu") == max(2 * timing.cpu_cache_bytes(), 64 * MiB)
    assert calibrate.stream_bytes("cpu", 256 * MiB) == calibrate.STREAM_FACTOR * 256 * MiB


def test_the_roof_names_the_probed_size(monkeypatch):
    """A CPU roof's cache is the largest view that re-read at cache speed (the one before the
    bound); its source names the bound and the size sysfs reports. The flush evicts the bound."""
    pytest.importorskip("torch", reason="torch is not installed: detection uses it")
    import attnspec.reports.detect as detect
    from attnspec.suite.test_device import fake_measured

    m = dataclasses.replace(fake_measured("cpu:x"), cache_bytes=256 * MiB, cache_nominal=480 * MiB)
    monkeypatch.setattr(detect, "calibrate", lambda *a, **k: m)
    roof = detect.resolve_device("cpu", env={})
    assert roof.cache_bytes == 128 * MiB
    assert (
        "re-reads of 128 MiB ran at cache speed, of 256 MiB at main-memory speed; sysfs says "
        "480 MiB" in roof.cache_source
    )


def test_a_cache_held_whole_keeps_the_reported_size():
    """No view slower: the roof keeps the size sysfs reports, and says it was probed."""
    assert cache_probe.held_size(480 * MiB, 480 * MiB) == 480 * MiB
    assert "no view re-read slower" in cache_probe.held_source(480 * MiB, 480 * MiB)


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
