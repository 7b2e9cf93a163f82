"""Measured roof of the current device: copy/triad bandwidth and a large GEMM.

Bandwidth follows STREAM (McCalpin, 1995): ``a = b`` (copy) and ``a = b + s·c`` (triad)
on buffers 8× the last-level cache, counting bytes read + written (2 and 3 elements per
index; write-allocate traffic is not counted, as in STREAM). Peak FLOP/s is a square
GEMM at 2n³ FLOPs: float32 on CPU, bf16 on GPU by default. Each figure is the median of
a few timed repeats after a warm-up; GPU timing uses CUDA events and synchronises.
Results are cached in a JSON file keyed by device (and GEMM dtype); pass
``recalibrate=True`` to measure again.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

MiB = 1 << 20
CALIBRATION_ENV = "ATTNSPEC_CALIBRATION_FILE"
DEFAULT_PATH = Path(__file__).resolve().parent / "out" / "calibration.json"
_DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


Timer = Callable[[Callable[[], object], int], float]
GEMM_TARGET_S = {True: 0.1, False: 1e-3}  # keyed by "on CPU": one product at least this long


class CalibrationError(ValueError):
    """The calibration cache can't be read, or the device can't be measured."""


@dataclass(frozen=True)
class Measured:
    """One device's measured roof (all rates per second, bytes = read + written)."""

    device_key: str
    copy_bandwidth: float
    triad_bandwidth: float
    gemm_flops: float
    gemm_dtype: str
    gemm_n: int
    buffer_bytes: int
    threads: int | None
    repeats: int
    seconds: float
    measured_at: str

    @property
    def bandwidth(self) -> float:
        """The better of copy and triad: the bandwidth roof."""
        return max(self.copy_bandwidth, self.triad_bandwidth)


def default_dtype(device: str) -> str:
    """float32 on CPU (no fast half GEMM there), bf16 on accelerators."""
    return "float32" if torch.device(device).type == "cpu" else "bfloat16"


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it, else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_key(device: str, threads: int | None = None) -> str:
    """A stable cache key: the device name, plus the thread count on CPU."""
    dev = torch.device(device)
    if dev.type == "cpu":
        n = threads if threads is not None else torch.get_num_threads()
        return f"cpu:{cpu_name()}:{n}threads"
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return f"{dev.type}:{dev}"


def _cpu_llc_bytes() -> int:
    sizes: list[tuple[int, int]] = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append((level, int(digits) * scale))
    return max(sizes)[1] if sizes else 32 * MiB


def _llc_bytes(dev: torch.device) -> int:
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        return int(getattr(props, "L2_cache_size", 0)) or 64 * MiB
    return _cpu_llc_bytes()


def _timer(dev: torch.device) -> Timer:
    """Seconds per call of ``fn``, timed over ``inner`` back-to-back calls."""
    if dev.type == "cuda":

        def time_cuda(fn: Callable[[], object], inner: int) -> float:
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(dev)
            start.record()
            for _ in range(inner):
                fn()
            stop.record()
            torch.cuda.synchronize(dev)
            return start.elapsed_time(stop) / 1e3 / inner

        return time_cuda

    def time_host(fn: Callable[[], object], inner: int) -> float:
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - t0) / inner

    return time_host


def _median_time(
    timer: Timer,
    fn: Callable[[], object],
    repeats: int,
    inner: int,
) -> float:
    timer(fn, 1)
    return statistics.median(timer(fn, inner) for _ in range(repeats))


def _stream_seconds(
    dev: torch.device, timer: Timer, n: int, repeats: int, inner: int
) -> tuple[float, float]:
    """Median seconds of one copy and one triad over n float32 elements."""
    a = torch.empty(n, dtype=torch.float32, device=dev)  # (n,)
    b = torch.ones(n, dtype=torch.float32, device=dev)  # (n,)
    c = torch.full((n,), 2.0, dtype=torch.float32, device=dev)  # (n,)
    copy_s = _median_time(timer, lambda: a.copy_(b), repeats, inner)
    triad_s = _median_time(timer, lambda: torch.add(b, c, alpha=3.0, out=a), repeats, inner)
    if not bool((a[:1] == 7.0).all()):
        raise CalibrationError("triad produced a wrong value; the timing can't be trusted")
    return copy_s, triad_s


def _gemm_seconds(
    dev: torch.device, timer: Timer, dtype: torch.dtype, sizes: tuple[int, int], repeats: int
) -> tuple[int, float]:
    """(n, median seconds) of an n×n @ n×n product in ``dtype``.

    n doubles from sizes[0] until one product takes GEMM_TARGET_S or n reaches sizes[1], so
    a dtype without fast kernels on this device (fp16 on most CPUs) stays a short run.
    """
    size, largest = sizes
    inner = 10 if dev.type != "cpu" else 1
    while True:
        x = torch.randn(size, size, device=dev).to(dtype)  # (n, n)
        w = torch.randn(size, size, device=dev).to(dtype)  # (n, n)
        out = torch.empty(size, size, dtype=dtype, device=dev)  # (n, n)

        def product(x: torch.Tensor = x, w: torch.Tensor = w, out: torch.Tensor = out) -> object:
            return torch.mm(x, w, out=out)

        timer(product, 1)
        if size >= largest or timer(product, 1) >= GEMM_TARGET_S[dev.type == "cpu"]:
            return size, _median_time(timer, product, repeats, inner)
        size *= 2


def measure(
    device: str = "cpu",
    dtype: str | None = None,
    *,
    repeats: int = 5,
    buffer_bytes: int | None = None,
    gemm_n: int | None = None,
    threads: int | None = None,
) -> Measured:
    """Measure copy/triad bandwidth and GEMM FLOP/s on ``device`` (about 3 s on 2 cores)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CalibrationError(f"device {device!r} requested but CUDA is not available")
    dtype = dtype or default_dtype(device)
    if dtype not in _DTYPES:
        raise CalibrationError(f"GEMM dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    on_gpu = dev.type != "cpu"
    saved_threads = torch.get_num_threads()
    n_threads = None if on_gpu else (threads or saved_threads)
    if n_threads is not None:
        torch.set_num_threads(n_threads)
    t_start = time.perf_counter()
    try:
        timer = _timer(dev)
        llc = _llc_bytes(dev)
        if buffer_bytes is None:
            buffer_bytes = max(8 * llc, 1024 * MiB if on_gpu else 64 * MiB)
        n = buffer_bytes // 4
        inner = 10 if on_gpu else 1
        copy_s, triad_s = _stream_seconds(dev, timer, n, repeats, inner)
        sizes = (gemm_n, gemm_n) if gemm_n else (2048, 8192) if on_gpu else (512, 2048)
        size, gemm_s = _gemm_seconds(dev, timer, _DTYPES[dtype], sizes, repeats)
    finally:
        torch.set_num_threads(saved_threads)
    return Measured(
        device_key=device_key(device, n_threads),
        copy_bandwidth=2 * 4 * n / copy_s,
        triad_bandwidth=3 * 4 * n / triad_s,
        gemm_flops=2 * size**3 / gemm_s,
        gemm_dtype=dtype,
        gemm_n=size,
        buffer_bytes=4 * n,
        threads=n_threads,
        repeats=repeats,
        seconds=time.perf_counter() - t_start,
        measured_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def cache_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The calibration file: ``path``, else $ATTNSPEC_CALIBRATION_FILE, else reports/out/."""
    if path is not None:
        return Path(path)
    env = os.environ.get(CALIBRATION_ENV)
    return Path(env) if env else DEFAULT_PATH


def _load(path: Path) -> dict[str, dict[str, object]]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CalibrationError(
            f"calibration cache {path} can't be read ({err}); delete it or recalibrate"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("devices"), dict):
        raise CalibrationError(
            f"calibration cache {path} has no 'devices' table; delete it or recalibrate"
        )
    return data["devices"]


def calibrate(
    device: str = "cpu",
    dtype: str | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    recalibrate: bool = False,
) -> Measured:
    """The cached measured roof of ``device``, measuring (and caching) it when absent."""
    dtype = dtype or default_dtype(device)
    file = cache_path(path)
    entry_key = f"{device_key(device)}|{dtype}"
    devices = _load_or_empty(file, recalibrate)
    cached = devices.get(entry_key)
    if cached is not None and not recalibrate:
        try:
            return Measured(**cached)  # type: ignore[arg-type]
        except TypeError:
            pass
    result = measure(device, dtype)
    devices[entry_key] = asdict(result)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"version": 1, "devices": devices}, indent=2) + "\n")
    os.replace(tmp, file)
    return result


def _load_or_empty(file: Path, recalibrate: bool) -> dict[str, dict[str, object]]:
    try:
        return _load(file)
    except CalibrationError:
        if recalibrate:
            return {}
        raise
