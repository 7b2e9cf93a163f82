"""The hardware side of the roofline: spec table, device detection, overrides, calibration, CLI."""

import json
import types

import pytest

torch = pytest.importorskip(
    "torch", reason="torch is not installed: detection and calibration use it"
)

import attnspec.reports.calibrate as calibrate  # noqa: E402  (after the skip: these import torch)
import attnspec.reports.detect as detect  # noqa: E402
import attnspec.reports.hardware as hardware  # noqa: E402
from attnspec.reports import timing  # noqa: E402
from attnspec.reports.__main__ import main  # noqa: E402
from attnspec.reports.hardware import H100_SXM, SPECS  # noqa: E402
from attnspec.specs.cost import decode_attention_cost  # noqa: E402

# Dense BF16/FP16 FLOP/s and bytes/s as DESIGN.md quotes them (MI300X: AMD's 1307.4).
DENSE = {
    "h100-sxm": (989e12, 3.35e12),
    "h100-pcie": (756e12, 2.0e12),
    "h200-sxm": (989e12, 4.8e12),
    "a100-40gb": (312e12, 1.555e12),
    "a100-80gb-sxm": (312e12, 2.039e12),
    "l40s": (362e12, 0.864e12),
    "l4": (121e12, 0.300e12),
    "rtx-4090": (165.2e12, 1.008e12),
    "b200": (2250e12, 8.0e12),
    "mi300x": (1307.4e12, 5.3e12),
}


def fake_measured(key="cuda:fake", gemm=100e12, copy=1.0e12, triad=1.2e12, read=None):
    read = copy if read is None else read
    return calibrate.Measured(
        device_key=key,
        bandwidth=max(copy, triad, read),
        bandwidth_method="triad" if triad >= max(copy, read) else "copy/read",
        streams={"copy": copy, "triad": triad, "read": read},
        rejected={},
        cache_level="L2",
        cache_bytes=50 << 20,
        cache_bandwidth=4 * max(copy, triad, read),
        gemm_flops=gemm,
        gemm_method="torch n=64",
        gemms={"torch n=64": gemm},
        gemm_dtype="bfloat16",
        buffer_bytes=1 << 20,
        threads=None,
        repeats=1,
        seconds=0.1,
        measured_at="now",
    )


@pytest.fixture
def fake_gpu(monkeypatch):
    """Pretend torch sees one GPU; return a setter for its name."""
    props = types.SimpleNamespace(
        name="?",
        major=9,
        minor=0,
        total_memory=80 << 30,
        multi_processor_count=132,
        L2_cache_size=50 << 20,
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda dev: props)
    monkeypatch.setattr(detect, "calibrate", lambda *a, **k: fake_measured())

    def named(name):
        props.name = name

    return named


def test_spec_table_is_dense_and_sourced():
    """Every entry quotes dense (not 2:4 sparse) figures and names where they come from."""
    for key, (flops, bandwidth) in DENSE.items():
        spec = SPECS[key]
        assert (spec.tensor_flops, spec.bandwidth) == (flops, bandwidth), key
        assert "datasheet" in spec.source or "whitepaper" in spec.source, key
    assert all(s.source for s in SPECS.values())


def test_h100_baseline_roof():
    """The baseline is H100 SXM: 989e12 FLOP/s, 3.35e12 B/s, ridge 295.2."""
    base = hardware.H100_BASELINE
    assert (base.peak_flops, base.bandwidth, base.spec) == (989e12, 3.35e12, H100_SXM)
    assert f"{base.ridge:.1f}" == "295.2"
    assert base.verdict(235.8) == "memory-bound" and base.verdict(437.0) == "compute-bound"


def test_decode_attention_memory_bound_on_every_gpu():
    """Decode attention (bf16, up to 8 query heads per kv head) is memory-bound on every table GPU."""
    for spec in SPECS.values():
        for group in (1, 4, 8):
            for B, T in ((1, 128), (64, 32768)):
                c = decode_attention_cost(B, 8 * group, 8, T, 128, 2)
                assert c.intensity < spec.tensor_flops / spec.bandwidth, (spec.key, group, B, T)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H200", "h200-sxm"),
        ("NVIDIA A100-SXM4-80GB", "a100-80gb-sxm"),
        ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
        ("NVIDIA A100 80GB PCIe", "a100-80gb-pcie"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("NVIDIA B200", "b200"),
        ("AMD Instinct MI300X", "mi300x"),
        ("NVIDIA H100 NVL", None),
        ("NVIDIA H200 NVL", None),
        ("NVIDIA H100", None),
        ("NVIDIA GeForce RTX 4090 D", None),
        ("NVIDIA L40", None),
    ],
)
def test_device_names_map_exactly(name, key):
    """torch device names map to their own entry; near misses are unknown, never a neighbour."""
    spec = detect.match_spec(name)
    assert (spec.key if spec else None) == key


def test_known_gpu_uses_its_spec(fake_gpu):
    """A recognised GPU's verdicts use its published roof, with the measured one beside it."""
    fake_gpu("NVIDIA H100 PCIe")
    roof = detect.resolve_device("cuda", env={})
    assert roof.known and (roof.peak_flops, roof.bandwidth) == (756e12, 2.0e12)
    assert roof.peak_source == "spec table (h100-pcie)" and roof.measured is not None
    assert detect.resolve_device("cuda", dtype="float32", env={}).peak_flops == 51e12


def test_unknown_gpu_is_reported_unknown(fake_gpu):
    """An unknown GPU keeps torch's properties, says it is unknown and uses the measured roof."""
    fake_gpu("NVIDIA H100 NVL")
    roof = detect.resolve_device("cuda", env={})
    assert not roof.known and roof.spec is None
    assert roof.properties["name"] == "NVIDIA H100 NVL"
    assert roof.properties["compute_capability"] == "9.0"
    assert any("unknown GPU 'NVIDIA H100 NVL'" in n for n in roof.notes)
    assert (roof.peak_flops, roof.bandwidth) == (100e12, 1.2e12)
    assert roof.peak_source.startswith("measured")
    blind = detect.resolve_device("cuda", env={}, calibrate_roof=False)
    assert blind.ridge is None and blind.verdict(1.0) == "unknown roof"


def test_overrides_beat_environment_beat_spec(fake_gpu):
    """An argument beats $ATTNSPEC_*, which beats the spec table."""
    fake_gpu("NVIDIA H100 80GB HBM3")
    env = {detect.PEAK_ENV: "500T", detect.BANDWIDTH_ENV: "2e12"}
    roof = detect.resolve_device("cuda", env=env, bandwidth=1e12)
    assert (roof.peak_flops, roof.bandwidth) == (500e12, 1e12)
    assert roof.peak_source == f"override (${detect.PEAK_ENV})"
    assert roof.bandwidth_source == "override (--bandwidth)"


BAD_VALUES = ["abc", "-1", "0", "nan", "inf", "", -5, 0, 0.0, True, [1]]


@pytest.mark.parametrize("value", BAD_VALUES, ids=[repr(v) for v in BAD_VALUES])
def test_bad_override_values_are_clear_errors(value):
    """Non-numeric, zero, negative or infinite overrides raise an error naming value and origin."""
    with pytest.raises(hardware.OverrideError, match="--peak-flops") as err:
        hardware.parse_rate(value, "peak FLOP/s", "--peak-flops")
    assert repr(value) in str(err.value)


def test_bad_environment_override_names_the_variable():
    """A bad $ATTNSPEC_BANDWIDTH is an error naming the variable, not a silent default."""
    with pytest.raises(hardware.OverrideError, match=r"\$ATTNSPEC_BANDWIDTH.*'-2'"):
        detect.resolve_device("cpu", env={detect.BANDWIDTH_ENV: "-2"}, calibrate_roof=False)


def test_cpu_is_the_detected_device(monkeypatch):
    """Without a GPU the detected device is the CPU, with its measured roof."""
    monkeypatch.setattr(
        detect, "calibrate", lambda *a, **k: fake_measured("cpu:x", 50e9, 10e9, 12e9)
    )
    roof = detect.resolve_device("cpu", env={})
    assert roof.kind == "cpu" and not roof.known
    assert (roof.peak_flops, roof.bandwidth) == (50e9, 12e9)
    assert (roof.cache_name, roof.cache_bytes) == ("LLC", timing.cpu_cache_bytes())
    assert roof.cache_bandwidth == 48e9 and "measured" in roof.cache_source
    assert roof.ridge == pytest.approx(50 / 12)


def test_measure_reports_positive_rates(monkeypatch):
    """A tiny real calibration gives finite positive rates for every method, and the roof is
    the best trusted stream and the best GEMM (a small flush buffer and few cache copies: the
    methods run, not their accuracy)."""
    monkeypatch.setattr(calibrate, "CACHE_REPEATS", 5)
    m = calibrate.measure(
        "cpu", repeats=1, buffer_bytes=4 << 20, gemm_n=64, threads=1, cache_bytes=4 << 20
    )
    assert (
        set(m.streams) == {"copy", "triad", "read", "gemv", "gemv-t"}
        and min(m.streams.values()) > 0
    )
    trusted = {k: v for k, v in m.streams.items() if k not in m.rejected}
    assert m.bandwidth == max(trusted.values()) and m.streams[m.bandwidth_method] == m.bandwidth
    assert set(m.gemms) == {"torch n=64", "numpy n=64"} and m.gemm_flops == max(m.gemms.values())
    assert (m.cache_bytes, m.cache_nominal) == (4 << 20, timing.cpu_cache_bytes())
    assert m.cache_bandwidth is None if "cache" in m.rejected else m.cache_bandwidth > m.bandwidth
    assert (m.threads, m.gemm_dtype, m.buffer_bytes, m.cache_level) == (
        1,
        "float32",
        4 << 20,
        "LLC",
    )


def test_stream_faster_than_reading_is_remeasured_then_rejected(monkeypatch):
    """A copy that beats the read-only stream by more than READ_MARGIN is measured again and,
    when it still does, kept in the file but left out of the roof."""
    seconds = {"copy": 1.0, "triad": 30.0, "read": 10.0, "gemv": 12.0, "gemv-t": 12.0}
    calls = []

    def best(device, fn, repeats, inner=1, before=None):
        name = next(k for k, (f, _) in streams.items() if f is fn)
        calls.append(name)
        return seconds[name]

    real = calibrate._stream_calls
    streams = {}

    def stream_calls(device, n):
        streams.update(real(device, n))
        return streams

    monkeypatch.setattr(calibrate, "_stream_calls", stream_calls)
    monkeypatch.setattr(timing, "confirmed_seconds", best)
    found, rejected = calibrate._streams("cpu", 1024, 1, 1, 4 << 20)
    assert calls.count("copy") == 1 + calibrate.REMEASURE and list(rejected) == ["copy"]
    assert found["copy"] == 20 * found["read"] and "not a memory rate" in rejected["copy"]


def test_each_stream_counts_the_bytes_it_moves(monkeypatch):
    """A matrix-vector stream reads its matrix, not the whole buffer: a rate over the buffer's
    size overstated x @ W by 1.4x (256 MiB counted, 180 MB read)."""
    monkeypatch.setattr(timing, "confirmed_seconds", lambda *a, **k: 1.0)
    n = 4096 * 64 + 100  # neither matrix shape covers the whole buffer
    found, _ = calibrate._streams("cpu", n, 1, 1, 4 << 20)
    assert found == {
        "copy": 8 * n,
        "triad": 12 * n,
        "read": 4 * n,
        "gemv": 4 * (n // 1024) * 1024,
        "gemv-t": 4 * 4096 * 64,
    }


def test_cache_copy_slower_than_memory_is_rejected(monkeypatch):
    """A cache copy no faster than main memory (a descheduled thread) is measured again, then
    left out: no cache roof rather than a wrong one."""
    calls = []
    monkeypatch.setattr(timing, "copy_bandwidth", lambda *a, **k: calls.append(1) or 2e9)
    _, why = calibrate._cache_bandwidth("cpu", 32 << 20, 30e9)
    assert len(calls) == 1 + calibrate.REMEASURE and "not a cache rate" in why


def test_calibration_is_cached_per_device(tmp_path, monkeypatch):
    """The roof is measured once, then read from the cache until recalibration is asked for."""
    calls = []
    monkeypatch.setattr(calibrate, "measure", lambda *a, **k: calls.append(1) or fake_measured())
    path = tmp_path / "calibration.json"
    first = calibrate.calibrate("cpu", path=path)
    assert calibrate.calibrate("cpu", path=path) == first and len(calls) == 1
    calibrate.calibrate("cpu", path=path, recalibrate=True)
    assert len(calls) == 2
    assert list(json.loads(path.read_text())["devices"]) == [
        f"{calibrate.device_key('cpu')}|float32"
    ]
    path.write_text("{not json")
    with pytest.raises(calibrate.CalibrationError, match="recalibrate"):
        calibrate.calibrate("cpu", path=path)
    calibrate.calibrate("cpu", path=path, recalibrate=True)
    assert len(calls) == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["--peak-flops", "abc"],
        ["--bandwidth", "-3"],
        ["--bandwidth", "0"],
        ["--device", "nonsense"],
    ],
)
def test_cli_bad_values_exit_2_with_one_line(argv, capsys):
    """Bad values print one error line, no traceback, and exit with status 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m attnspec.reports: error:")
    assert "Traceback" not in err


def test_cli_prints_device_roof_and_baseline(tmp_path, monkeypatch, capsys):
    """The command prints the detected device, its roof and ridge, and the H100 baseline."""
    monkeypatch.delenv(detect.PEAK_ENV, raising=False)
    monkeypatch.delenv(detect.BANDWIDTH_ENV, raising=False)
    monkeypatch.setattr(
        calibrate, "measure", lambda *a, **k: fake_measured("cpu:x", 50e9, 10e9, 12e9)
    )
    assert main(["--device", "cpu", "--calibration-file", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    for text in ("Detected device", "copy 10 GB/s", "GEMM", "50 GFLOP/s", "ridge          4.2 FLOP/byte",
                 "LLC", "48 GB/s",
                 "Baseline: NVIDIA H100 SXM5 80GB", "295.2 FLOP/byte", "437.0"):  # fmt: skip
        assert text in out, text


def test_last_level_cache_is_the_highest_level(tmp_path):
    """The last-level cache is the highest level sysfs lists, even when a lower level is larger."""
    for i, (level, size) in enumerate([(1, "48K"), (1, "32K"), (2, "64M"), (3, "32M")]):
        index = tmp_path / f"index{i}"
        index.mkdir()
        (index / "level").write_text(f"{level}\n")
        (index / "size").write_text(f"{size}\n")
    assert timing.cpu_cache_bytes(tmp_path) == 32 << 20
    assert timing.cpu_cache_bytes(tmp_path / "missing") == 32 << 20


def test_copy_bandwidth_counts_read_and_write():
    """copy_bandwidth is positive and finite on a small buffer, and rejects an empty one."""
    assert 0 < timing.copy_bandwidth("cpu", 1 << 20, repeats=1) < float("inf")
    with pytest.raises(ValueError, match="nbytes"):
        timing.copy_bandwidth("cpu", 0)
