"""Measured roof of the current device: copy/triad bandwidth and a large GEMM.

Bandwidth follows STREAM (McCalpin, 1995): ``a = b`` (copy) and ``a = b + s·c`` (triad)
on buffers 8× the last-level cache, counting bytes read + written (2 and 3 elements per
index; write-allocate traffic is not counted, as in STREAM). Peak FLOP/s is a square
GEMM at 2n³ FLOPs: float32 on CPU, bf16 on GPU by default. Each figure is the median of
a few timed repeats after a warm-up, timed by ``reports.timing`` (synchronising timers;
the copy is ``timing.copy_bandwidth``, the one the decode benchmarks compare against).
Results are cached in a JSON file keyed by device (and GEMM dtype); pass
``recalibrate=True`` to measure again.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch

from reports import timing
from reports.hardware import cpu_name
from reports.measured import Measured

MiB = 1 << 20
CALIBRATION_ENV = "ATTNSPEC_CALIBRATION_FILE"
DEFAULT_PATH = Path(__file__).resolve().parent / "out" / "calibration.json"
_DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

GEMM_TARGET_S = {True: 0.1, False: 1e-3}  # keyed by "on CPU": one product at least this long


class CalibrationError(ValueError):
    """The calibration cache can't be read, or the device can't be measured."""


def default_dtype(device: str) -> str:
    """float32 on CPU (no fast half GEMM there), bf16 on accelerators."""
    return "float32" if torch.device(device).type == "cpu" else "bfloat16"


def device_key(device: str, threads: int | None = None) -> str:
    """A stable cache key: the device name, plus the thread count on CPU."""
    dev = torch.device(device)
    if dev.type == "cpu":
        n = threads if threads is not None else torch.get_num_threads()
        return f"cpu:{cpu_name()}:{n}threads"
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return f"{dev.type}:{dev}"


def _triad_seconds(device: str, n: int, repeats: int, inner: int) -> float:
    """Median seconds of one triad a = b + 3c over n float32 elements."""
    a = torch.empty(n, dtype=torch.float32, device=device)  # (n,)
    b = torch.ones(n, dtype=torch.float32, device=device)  # (n,)
    c = torch.full((n,), 2.0, dtype=torch.float32, device=device)  # (n,)
    seconds = timing.median_seconds(
        device, lambda: torch.add(b, c, alpha=3.0, out=a), repeats, inner
    )
    if not bool((a[:1] == 7.0).all()):
        raise CalibrationError("triad produced a wrong value; the timing can't be trusted")
    return seconds


def _gemm_seconds(
    device: str, dtype: torch.dtype, sizes: tuple[int, int], repeats: int
) -> tuple[int, float]:
    """(n, median seconds) of an n×n @ n×n product in ``dtype``.

    n doubles from sizes[0] until one product takes GEMM_TARGET_S or n reaches sizes[1], so
    a dtype without fast kernels on this device (fp16 on most CPUs) stays a short run.
    """
    size, largest = sizes
    on_cpu = not timing.is_cuda(device)
    inner = 1 if on_cpu else 10
    while True:
        x = torch.randn(size, size, device=device).to(dtype)  # (n, n)
        w = torch.randn(size, size, device=device).to(dtype)  # (n, n)
        out = torch.empty(size, size, dtype=dtype, device=device)  # (n, n)

        def product(x: torch.Tensor = x, w: torch.Tensor = w, out: torch.Tensor = out) -> object:
            return torch.mm(x, w, out=out)

        if size >= largest or timing.median_seconds(device, product, 1) >= GEMM_TARGET_S[on_cpu]:
            return size, timing.median_seconds(device, product, repeats, inner)
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
    name = str(dev)
    try:
        if buffer_bytes is None:
            buffer_bytes = max(8 * timing.cache_bytes(name), 1024 * MiB if on_gpu else 64 * MiB)
        n = buffer_bytes // 4
        inner = 10 if on_gpu else 1
        copy_bw = timing.copy_bandwidth(name, 4 * n, repeats, inner)
        triad_s = _triad_seconds(name, n, repeats, inner)
        sizes = (gemm_n, gemm_n) if gemm_n else (2048, 8192) if on_gpu else (512, 2048)
        size, gemm_s = _gemm_seconds(name, _DTYPES[dtype], sizes, repeats)
    finally:
        torch.set_num_threads(saved_threads)
    return Measured(
        device_key=device_key(device, n_threads),
        copy_bandwidth=copy_bw,
        triad_bandwidth=3 * 4 * n / triad_s,
        gemm_flops=2 * size**3 / gemm_s,
        gemm_dtype=dtype,
        gemm_n=size,
        buffer_bytes=4 * n,
        threads=n_threads,
        repeats=repeats,
        seconds=time.perf_counter() - t_start,
        measured_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
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
