"""Measured roof of the current device: a ceiling for bandwidth, cache bandwidth and GEMM FLOP/s.

Main-memory bandwidth follows STREAM (McCalpin, 1995): copy ``a = b``, triad ``a = b + s·c``,
a read-only reduction ``sum(b)`` and two read-only matrix-vector products (W @ x and x @ W,
the patterns decode and batch-1 matmul read with), on random-filled buffers twice a bound on
the cache the device holds (a constant fill can be deduplicated or compressed by a hypervisor;
on a CPU the bound is probed first, attnspec.reports.cache_probe, and kept in the file), counting
bytes read + written (2, 3 and 1 elements per index; write-allocate traffic is not counted,
as in STREAM). Each figure is the fastest rate reached twice in a few repeats after a
warm-up, each from a flushed cache as the benchmarks run (``timing.confirmed_seconds``):
the roof is a ceiling, noise on a shared machine only ever slows a run down, and one
glitched timing can't set it. A copy or triad that beats the read-only streams by more than
READ_MARGIN is measured again and, if it still does, recorded but not trusted (a read-only
stream is what a memory system does fastest). The roof is the best trusted stream.

The cache roof is a copy whose two buffers together fill a quarter of the cache bound
(LLC on a CPU, probed; L2 on a GPU, the driver's size), repeated back to back so the
data stays resident, best of CACHE_REPEATS short timings; one that is not faster than main
memory is measured again and then rejected (no cache roof). Peak FLOP/s is the best of
square GEMMs of several sizes, with torch and (on CPU, for float32/float64) numpy, at 2n³
FLOPs: float32 on CPU, bf16 on GPU by default. Every method's figure is kept in the
calibration file and printed in the report. Results are cached in a JSON file keyed by
device (and GEMM dtype); pass ``recalibrate=True`` to measure again. A benchmark session
raises the cached figures with the samples it takes beside its benchmarks (attnspec.reports.ceiling,
``keep_ceiling``): on a shared machine the bandwidth changes from second to second, and a
roof is the best the machine has shown.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from attnspec.reports import cache_probe, timing
from attnspec.reports.hardware import cpu_name
from attnspec.reports.measured import Measured, utc_now

MiB = 1 << 20
CALIBRATION_ENV = "ATTNSPEC_CALIBRATION_FILE"
DEFAULT_PATH = Path(__file__).resolve().parent / "out" / "calibration.json"
FILE_VERSION = 5  # 5: the probed cache bound (cache_probe) sizes the buffers
_DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
STREAM_ELEMENTS = {"copy": 2, "triad": 3, "read": 1}  # float32 elements moved per index
GEMV_COLUMNS = 1024  # "gemv" reads an (n / 1024, 1024) matrix
GEMV_T_SHAPE = (4096, 11008)  # "gemv-t" reads the textbook's weight matrix (Llama-7B's MLP,
# the matmul benchmark's W) as a batch-1 matmul does; on the CI VM OpenBLAS streams that
# shape ~6% faster than a (1024, n / 1024) matrix of 256 MiB
READ_ONLY = ("read", "gemv", "gemv-t")
READ_MARGIN = 1.25  # a copy/triad this much faster than the read-only stream is suspect
REMEASURE = 2  # further tries of a suspect stream before it is rejected
GEMM_TARGET_S = {True: 0.1, False: 1e-3}  # keyed by "on CPU": stop growing n past this
GEMM_SIZES = {True: (512, 2048), False: (2048, 8192)}  # (first n, largest n), doubling


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


def _stream_calls(device: str, n: int) -> dict[str, tuple[Callable[[], object], int]]:
    """copy, triad, read and the two matrix-vector streams over n random float32 elements,
    each with the bytes one call moves; the triad is checked once for a right value."""
    a = torch.empty(n, dtype=torch.float32, device=device)  # (n,)
    b = random_buffer(n, device, seed=0)  # (n,)
    c = random_buffer(n, device, seed=1)  # (n,)
    total = torch.empty((), dtype=torch.float32, device=device)  # ()
    torch.add(b, c, alpha=3.0, out=a)
    if not torch.allclose(a[:64], b[:64] + 3.0 * c[:64]):
        raise CalibrationError("triad produced a wrong value; the timing can't be trusted")
    stream: dict[str, Callable[[], object]] = {
        "copy": lambda: a.copy_(b),
        "triad": lambda: torch.add(b, c, alpha=3.0, out=a),
        "read": lambda: torch.sum(b, dim=0, out=total),
    }
    calls = {name: (call, STREAM_ELEMENTS[name] * 4 * n) for name, call in stream.items()}
    # Matrix-vector products read their matrix once, as BLAS streams it: on a CPU often faster
    # than torch's reduction (the decode and batch-1 matmul rows read their data this way).
    return calls | read_streams(b, device)


STREAM_FACTOR = 2  # a stream buffer is this many times the cache bound: twice a working set
# that already re-read at main-memory speed (attnspec.reports.cache_probe), 4x the largest one
# seen held, STREAM's rule for each array (8x the sysfs LLC took 3.8 GB a buffer)


def stream_bytes(device: str, cache: int | None = None) -> int:
    """The size of a stream buffer: STREAM_FACTOR times ``cache`` (the probed bound on the held
    cache; the size the OS or driver reports when not given), at least 64 MiB on a CPU and 1 GiB
    on a GPU."""
    bound = timing.cache_bytes(device) if cache is None else cache
    return max(STREAM_FACTOR * bound, MiB * (1024 if timing.is_cuda(device) else 64))


def probe_cache(device: str) -> cache_probe.CacheProbe:
    """The bound on the last cache level the device's tenant holds: probed on a CPU
    (attnspec.reports.cache_probe), the driver's figure on a GPU."""
    nominal = timing.cache_bytes(device)
    if timing.is_cuda(device):
        return cache_probe.CacheProbe(bound=nominal, held=nominal, nominal=nominal, rates={})
    return cache_probe.probe_cpu(nominal)


def random_buffer(n: int, device: str, *, seed: int) -> torch.Tensor:
    """n uniform float32 values on ``device`` (random: a constant fill can be deduplicated).
    On a CPU numpy allocates them, as it does a numpy implementation's arrays (with
    transparent huge pages where the OS offers them, a few % faster to stream)."""
    if timing.is_cuda(device):
        gen = torch.Generator(device=device).manual_seed(seed)
        return torch.rand(n, generator=gen, device=device)
    return torch.from_numpy(np.random.default_rng(seed).random(n, dtype=np.float32))


def read_streams(buffer: torch.Tensor, device: str) -> dict[str, tuple[Callable[[], object], int]]:
    """The two matrix-vector streams over a float32 ``buffer``, each with the bytes it reads:
    W @ x ("gemv", W (n/1024, 1024) row-major) and x @ W ("gemv-t", x (1, 4096), W
    (4096, 11008) or what fits: the batch-1 matmul's pattern). numpy's BLAS on a CPU (what
    numpy implementations get), torch on a GPU."""
    n = buffer.numel()
    tall = (n // GEMV_COLUMNS, GEMV_COLUMNS)
    wide = (GEMV_T_SHAPE[0], min(GEMV_T_SHAPE[1], n // GEMV_T_SHAPE[0]))
    return {
        "gemv": (_matvec(buffer, device, tall, vector_first=False), 4 * tall[0] * tall[1]),
        "gemv-t": (_matvec(buffer, device, wide, vector_first=True), 4 * wide[0] * wide[1]),
    }


def _matvec(
    buffer: torch.Tensor, device: str, shape: tuple[int, int], *, vector_first: bool
) -> Callable[[], object]:
    """x @ W or W @ x over the start of ``buffer`` viewed as a row-major ``shape`` matrix."""
    rows, cols = shape
    x_shape = (1, rows) if vector_first else (cols,)  # a batch-1 row; a vector
    if timing.is_cuda(device):
        w = buffer[: rows * cols].view(rows, cols)  # (rows, cols)
        x = torch.ones(x_shape, device=device)  # (1, rows) or (cols,)
        return (lambda: x @ w) if vector_first else (lambda: w @ x)
    wn = buffer[: rows * cols].numpy().reshape(rows, cols)  # (rows, cols)
    xn = np.ones(x_shape, dtype=np.float32)  # (1, rows) or (cols,)
    return (lambda: xn @ wn) if vector_first else (lambda: wn @ xn)


def _streams(
    device: str, n: int, repeats: int, inner: int, cache: int
) -> tuple[dict[str, float], dict[str, str]]:
    """Each stream's bandwidth (the fastest reached twice in ``repeats``), and the streams not
    trusted (with why); ``cache`` is the cache bound the flush evicts."""
    calls = _stream_calls(device, n)
    flush = timing.flusher(device, cache)  # each timing streams from memory, as benchmarks do

    def rate(name: str) -> float:
        call, moved = calls[name]
        return moved / timing.confirmed_seconds(device, call, repeats, inner, flush)

    found = {name: rate(name) for name in calls}
    rejected = {}
    for name in ("copy", "triad"):
        tries = 0
        read = max(found[k] for k in READ_ONLY)  # the fastest read-only stream
        while found[name] > READ_MARGIN * read and tries < REMEASURE:
            found[name], tries = rate(name), tries + 1
        if found[name] > READ_MARGIN * read:
            rejected[name] = (
                f"{found[name] / read:.2f}x the read-only streams after {tries} "
                f"re-measurements (limit {READ_MARGIN}x): not a memory rate"
            )
    return found, rejected


CACHE_REPEATS = 200  # a cache-resident copy takes tens of µs: one descheduled thread (a time
# slice, ~4 ms) would hide it, so it is timed many times, a few calls each, and the best kept


def _cache_bandwidth(device: str, cache_bytes: int, main_bandwidth: float) -> tuple[float, str]:
    """Copy bandwidth over two buffers filling a quarter of the cache, resident between calls;
    and why it is not trusted ("" when it is): a cache slower than main memory is re-measured,
    then rejected."""
    nbytes = max(cache_bytes // 8, 4096)
    found, tries = 0.0, 0
    while tries <= REMEASURE:
        found = timing.copy_bandwidth(device, nbytes, CACHE_REPEATS, 2, best=True)
        if found > main_bandwidth:
            return found, ""
        tries += 1
    return found, (
        f"{found / main_bandwidth:.2f}x the main-memory roof after {REMEASURE} re-measurements: "
        "not a cache rate, no cache roof"
    )


def _gemms(device: str, dtype: str, sizes: tuple[int, int], repeats: int) -> dict[str, float]:
    """FLOP/s of n×n @ n×n products, n doubling from sizes[0] until one product takes
    GEMM_TARGET_S or n reaches sizes[1], with torch and (on CPU, float32/64) numpy."""
    on_cpu = not timing.is_cuda(device)
    libraries = ["torch"] + (["numpy"] if on_cpu and dtype in ("float32", "float64") else [])
    inner = 1 if on_cpu else 10
    found: dict[str, float] = {}
    for library in libraries:
        size, largest = sizes
        while True:
            product = _product(library, device, dtype, size)
            first = timing.best_seconds(device, product, 1)
            seconds = timing.confirmed_seconds(device, product, repeats, inner)
            found[f"{library} n={size}"] = 2 * size**3 / seconds
            if size >= largest or first >= GEMM_TARGET_S[on_cpu]:
                break
            size *= 2
    return found


def product(method: str, device: str, dtype: str) -> Callable[[], object]:
    """The GEMM a method key names ("numpy n=1024", as in Measured.gemms), ready to call."""
    library, _, size = method.partition(" n=")
    if library not in ("torch", "numpy") or not size.isdigit():
        raise CalibrationError(f"not a GEMM method: {method!r} (expected e.g. 'numpy n=1024')")
    return _product(library, device, dtype, int(size))


def _product(library: str, device: str, dtype: str, n: int) -> Callable[[], object]:
    if library == "numpy":
        rng = np.random.default_rng(0)
        xn = rng.standard_normal((n, n)).astype(dtype)  # (n, n)
        wn = rng.standard_normal((n, n)).astype(dtype)  # (n, n)
        outn = np.empty((n, n), dtype=dtype)  # (n, n)
        return lambda: np.matmul(xn, wn, out=outn)
    x = torch.randn(n, n, device=device).to(_DTYPES[dtype])  # (n, n)
    w = torch.randn(n, n, device=device).to(_DTYPES[dtype])  # (n, n)
    out = torch.empty(n, n, dtype=_DTYPES[dtype], device=device)  # (n, n)
    return lambda: torch.mm(x, w, out=out)


def measure(
    device: str = "cpu",
    dtype: str | None = None,
    *,
    repeats: int = 5,
    buffer_bytes: int | None = None,
    gemm_n: int | None = None,
    threads: int | None = None,
    cache_bytes: int | None = None,
) -> Measured:
    """Measure the cache bound, streams, cache copy and GEMMs on ``device`` (4-6 s on 2
    cores); ``cache_bytes`` (a bound) given skips the cache probe."""
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
        if cache_bytes is None:
            found = probe_cache(name)
        else:
            found = cache_probe.CacheProbe(cache_bytes, cache_bytes, timing.cache_bytes(name), {})
        cache = found.bound
        if buffer_bytes is None:
            buffer_bytes = stream_bytes(name, cache)
        n = buffer_bytes // 4
        streams, rejected = _streams(name, n, repeats, 10 if on_gpu else 1, cache)
        trusted = {k: v for k, v in streams.items() if k not in rejected}
        cache_bw, cache_why = _cache_bandwidth(name, cache, max(trusted.values()))
        if cache_why:
            rejected["cache"] = cache_why
        sizes = (gemm_n, gemm_n) if gemm_n else GEMM_SIZES[not on_gpu]
        gemms = _gemms(name, dtype, sizes, repeats)
    finally:
        torch.set_num_threads(saved_threads)
    bw_method = max(trusted, key=lambda k: trusted[k])
    gemm_method = max(gemms, key=lambda k: gemms[k])
    return Measured(
        device_key=device_key(device, n_threads),
        bandwidth=trusted[bw_method],
        bandwidth_method=bw_method,
        streams=streams,
        rejected=rejected,
        cache_level="L2" if on_gpu else "LLC",
        cache_bytes=cache,
        cache_nominal=found.nominal,
        cache_held=found.held,
        cache_rates=found.rates,
        cache_bandwidth=None if cache_why else cache_bw,
        gemm_flops=gemms[gemm_method],
        gemm_method=gemm_method,
        gemms=gemms,
        gemm_dtype=dtype,
        buffer_bytes=4 * n,
        threads=n_threads,
        repeats=repeats,
        seconds=time.perf_counter() - t_start,
        measured_at=utc_now(),
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
    if data.get("version") != FILE_VERSION:
        return {}  # an older layout: measure again
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
    _write(file, devices)
    return result


def keep_ceiling(
    device: str,
    dtype: str,
    samples: dict[str, list[float]],
    count: int,
    *,
    path: str | os.PathLike[str] | None = None,
) -> Measured | None:
    """Merge a session's two best samples per method into the cached calibration of
    ``device`` (Measured.with_samples: the two best of old and new; a figure beaten by more
    than RAISE_MARGIN is raised), so the next session starts from the ceiling this one saw.
    Returns the updated entry; None when nothing is cached for the device."""
    file = cache_path(path)
    devices = _load(file)
    entry_key = f"{device_key(device)}|{dtype}"
    entry = devices.get(entry_key)
    if entry is None:
        return None
    old = Measured(**entry)  # type: ignore[arg-type]
    updated = old.with_samples(samples, count, utc_now())
    devices[entry_key] = asdict(updated)
    _write(file, devices)
    return updated


def _write(file: Path, devices: dict[str, dict[str, object]]) -> None:
    """Write the calibration file atomically (a temporary file, then a rename)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"version": FILE_VERSION, "devices": devices}, indent=2) + "\n")
    os.replace(tmp, file)


def _load_or_empty(file: Path, recalibrate: bool) -> dict[str, dict[str, object]]:
    try:
        return _load(file)
    except CalibrationError:
        if recalibrate:
            return {}
        raise
