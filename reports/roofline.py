"""Roofline figures for each benchmark: achieved rates, intensity, fraction of the roof, verdict.

The roofline (Williams, Waterman and Patterson, CACM 2009): an op doing F FLOPs while moving
M bytes can't finish faster than max(F / peak, M / bandwidth). The fraction of the roof a
run attains is that bound divided by its measured time, which equals achieved FLOP/s over
min(peak, intensity x bandwidth) (and achieved bytes/s over bandwidth for an op with no
FLOPs). The verdict compares intensity F / M with the ridge peak / bandwidth; a run faster
than LAUNCH_BOUND_S is launch-bound: fixed per-call overhead, not the roof, sets its time.

A benchmark reports a `Record` (plain numbers, stored in pytest-benchmark's extra_info);
`analyse` turns it into a `Row` on the detected device and on the H100 baseline, where the
op's cost is re-evaluated with the baseline's 2-byte elements (what the op would be in bf16).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

LAUNCH_BOUND_S = 10e-6  # DESIGN.md: results under ~10 µs are launch-bound and say so
BASELINE_ELEMENT_BYTES = 2  # the H100 baseline is judged in bf16


class Roof(Protocol):
    """Any device roof: reports.hardware.DeviceRoof fits."""

    @property
    def name(self) -> str: ...
    @property
    def peak_flops(self) -> float | None: ...
    @property
    def bandwidth(self) -> float | None: ...


@dataclass
class Record:
    """One benchmark's measurement and analytic cost, as plain numbers.

    `flops`/`bytes` are the cost at the run's dtype; `baseline_flops`/`baseline_bytes` the
    same op at 2-byte elements. `seconds` is the median time per call (None when benchmarks
    ran untimed); `spread` its interquartile range. `check` is "ok", or "FAIL <clause>: ..."
    when the output of the benchmarked call did not match the float64 reference.
    """

    group: str
    variant: str
    case: str
    impl: str
    device: str
    dtype: str
    shape: dict[str, Any]
    flops: float
    bytes: float
    baseline_flops: float
    baseline_bytes: float
    clause: str = ""
    seconds: float | None = None
    spread: float | None = None
    rounds: int | None = None
    check: str = "ok"
    extras: dict[str, Any] = field(default_factory=dict)
    nodeid: str = ""

    @property
    def failed(self) -> bool:
        return self.check.startswith("FAIL")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Figures:
    """A record judged against one roof."""

    roof: str
    intensity: float
    flop_rate: float | None
    byte_rate: float | None
    bound_seconds: float | None  # max(F / peak, M / bandwidth): the roofline's time
    fraction: float | None
    verdict: str


@dataclass
class Row:
    """A record with its figures on the detected device and on the H100 baseline."""

    record: Record
    device: Figures
    baseline: Figures
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.record.to_dict(),
            "on_device": asdict(self.device),
            "on_h100": asdict(self.baseline),
            "notes": list(self.notes),
        }


def intensity(flops: float, nbytes: float) -> float:
    """FLOP per byte moved."""
    if nbytes <= 0:
        raise ValueError(f"bytes must be > 0, got {nbytes!r}")
    return flops / nbytes


def bound_seconds(flops: float, nbytes: float, roof: Roof) -> float | None:
    """The roofline's lower bound on time, max(F / peak, M / bandwidth); None without a roof."""
    if roof.peak_flops is None or roof.bandwidth is None:
        return None
    return max(flops / roof.peak_flops, nbytes / roof.bandwidth)


def verdict(flops: float, nbytes: float, roof: Roof, seconds: float | None = None) -> str:
    """memory-bound / compute-bound by intensity vs ridge; launch-bound when the run is tiny."""
    if seconds is not None and seconds < LAUNCH_BOUND_S:
        return "launch-bound"
    if roof.peak_flops is None or roof.bandwidth is None:
        return "unknown roof"
    ridge = roof.peak_flops / roof.bandwidth
    return "memory-bound" if intensity(flops, nbytes) < ridge else "compute-bound"


def figures(flops: float, nbytes: float, roof: Roof, seconds: float | None) -> Figures:
    """Achieved rates and the fraction of the roof attained by a run of `seconds`."""
    bound = bound_seconds(flops, nbytes, roof)
    timed = seconds if seconds is not None and seconds > 0 else None
    return Figures(
        roof=roof.name,
        intensity=intensity(flops, nbytes),
        flop_rate=flops / timed if timed else None,
        byte_rate=nbytes / timed if timed else None,
        bound_seconds=bound,
        fraction=bound / timed if timed and bound is not None else None,
        verdict=verdict(flops, nbytes, roof, seconds),
    )


def analyse(record: Record, roof: Roof, baseline: Roof) -> Row:
    """Judge `record` on its device's roof (measured time) and on the baseline (intensity only)."""
    return Row(
        record=record,
        device=figures(record.flops, record.bytes, roof, record.seconds),
        baseline=figures(record.baseline_flops, record.baseline_bytes, baseline, None),
    )


def _pairs(rows: list[Row], left: str, right: str, *, same_impl: bool) -> list[tuple[Row, Row]]:
    """(left, right) rows of one group that share case, dtype and device (and impl)."""
    found: dict[tuple[Any, ...], dict[str, Row]] = defaultdict(dict)
    for row in rows:
        r = row.record
        key = (r.group, r.case, r.dtype, r.device.split(":")[0]) + ((r.impl,) if same_impl else ())
        found[key][r.variant.split()[0]] = row
    return [(v[left], v[right]) for v in found.values() if left in v and right in v]


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, None when either is missing."""
    return a / b if a is not None and b is not None and b > 0 else None


def annotate(rows: list[Row]) -> None:
    """Add cross-row comparisons to the rows' notes: copy bandwidth, chunked vs recurrent,
    tiled vs SDPA, cached generation vs recompute (measured and predicted)."""
    for row in rows:
        ex = row.record.extras
        if "copy_bandwidth" in ex and row.device.byte_rate is not None:
            ex["copy_ratio"] = row.device.byte_rate / ex["copy_bandwidth"]
            row.notes.append(f"{ex['copy_ratio']:.2f}x copy BW")
    for rec, chunk in _pairs(rows, "recurrent", "chunked", same_impl=True):
        speedup = ratio(rec.record.seconds, chunk.record.seconds)
        if speedup is not None:
            chunk.record.extras["speedup_vs_recurrent"] = speedup
            chunk.notes.append(f"{speedup:.1f}x faster than recurrent")
    sdpa = [r for r in rows if r.record.variant.startswith("sdpa")]
    for tiled in (r for r in rows if r.record.variant.startswith("tiled")):
        for base in sdpa:
            t, b = tiled.record, base.record
            if (t.group, t.case, t.dtype) == (b.group, b.case, b.dtype) and t.device.split(":")[
                0
            ] == b.device.split(":")[0]:
                time_ratio = ratio(t.seconds, b.seconds)
                if time_ratio is not None:
                    t.extras["time_vs_sdpa"] = time_ratio
                    tiled.notes.append(f"{time_ratio:.2f}x SDPA time")
    for cached, recompute in _pairs(rows, "cached", "recompute", same_impl=True):
        measured = ratio(recompute.record.seconds, cached.record.seconds)
        if measured is not None:
            cached.record.extras["speedup_vs_recompute"] = measured
            cached.notes.append(f"{measured:.1f}x faster than recompute")


def predicted_seconds(steps: list[list[float]], roof: Roof) -> float | None:
    """Sum of the roofline's time over a sequence of (FLOPs, bytes) steps."""
    total = 0.0
    for flops, nbytes in steps:
        bound = bound_seconds(flops, nbytes, roof)
        if bound is None:
            return None
        total += bound
    return total


def predicted_speedup(cached: Row, recompute: Row, roof: Roof, *, baseline: bool) -> float | None:
    """Recompute time over cached time as the cost model predicts them on `roof`."""
    key = "baseline_steps" if baseline else "steps"
    fast = predicted_seconds(cached.record.extras.get(key, []), roof)
    slow = predicted_seconds(recompute.record.extras.get(key, []), roof)
    return ratio(slow, fast)


def cache_comparisons(
    rows: list[Row], roof_of: Callable[[Record], Roof], baseline: Roof
) -> list[dict[str, Any]]:
    """Cached generation vs full recompute: measured speedup beside the predicted ones."""
    out = []
    for cached, recompute in _pairs(rows, "cached", "recompute", same_impl=True):
        r = cached.record
        out.append(
            {
                "impl": r.impl,
                "case": r.case,
                "dtype": r.dtype,
                "device": r.device,
                "cached_s": r.seconds,
                "recompute_s": recompute.record.seconds,
                "speedup": ratio(recompute.record.seconds, r.seconds),
                "predicted_speedup": predicted_speedup(
                    cached, recompute, roof_of(r), baseline=False
                ),
                "predicted_speedup_h100": predicted_speedup(
                    cached, recompute, baseline, baseline=True
                ),
                "failed": r.failed or recompute.record.failed,
            }
        )
    return out


def summarise(rows: list[Row]) -> list[str]:
    """One line per op group and roof: which cases are memory-, compute- or launch-bound."""
    lines = []
    groups: dict[tuple[str, str], list[tuple[str, Figures]]] = defaultdict(list)
    for row in rows:
        name = f"{row.record.case} {row.record.variant}".strip()
        groups[(row.record.group, row.device.roof)].append((name, row.device))
        groups[(row.record.group, "H100 SXM (bf16)")].append((name, row.baseline))
    for (group, roof), members in groups.items():
        by_verdict: dict[str, list[str]] = defaultdict(list)
        for name, fig in members:
            by_verdict[fig.verdict].append(name)
        if len(by_verdict) == 1:
            parts = [f"{next(iter(by_verdict))} in all {len(members)} rows"]
        else:
            parts = [f"{v}: {', '.join(dict.fromkeys(n))}" for v, n in by_verdict.items()]
        lines.append(f"{group} on {roof}: " + "; ".join(parts))
    return lines
