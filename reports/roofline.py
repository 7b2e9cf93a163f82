"""Roofline figures for each benchmark: achieved rates, intensity, fraction of the roof, verdict.

The roof and the verdict come from attnspec.specs.cost (the functions COST-RIDGE and COST-HIERARCHY
test): an op doing F FLOPs whose bytes split into main-memory and cache-level traffic
(``level_bytes``) can't finish faster than the slowest of F / peak, main / bandwidth and
cache / cache bandwidth (``level_seconds``; Williams, Waterman and Patterson, CACM 2009, and
its hierarchical form). The fraction of the roof a run attains is that bound divided by its
measured time; its intensity is FLOPs per main-memory byte; the verdict names the slowest
level. A run whose time is mostly fixed per-call cost (at least OVERHEAD_SHARE of it is the
same call on a minimal input, or it is under LAUNCH_BOUND_S) is "overhead-bound" instead; on a
measured roof, an op whose compute and memory times are within RIDGE_BAND is "balanced".

A benchmark reports a `Record` (plain numbers, stored in pytest-benchmark's extra_info);
`analyse` turns it into a `Row` on the detected device and on the H100 baseline, where the
op's cost is re-evaluated with the baseline's 2-byte elements (what the op would be in bf16).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from attnspec.reports.measured import RAISE_MARGIN
from attnspec.specs.cost import Cost, Traffic, hierarchical_verdict, level_bytes, level_seconds

LAUNCH_BOUND_S = 10e-6  # DESIGN.md: results under ~10 µs are launch-bound and say so
OVERHEAD_SHARE = 2 / 3  # a floor this share of the time makes a row overhead-bound
OVERHEAD_NOTE_SHARE = 0.2  # a floor this share of the time is named in a slow row's note
# On a measured roof, compute and memory times within this factor of each other are "balanced":
# both roofs matter there, and the measured ridge is not known closely enough to pick one.
RIDGE_BAND = 1.25
ROOF_PRECISION = RAISE_MARGIN  # a row this close above the roof is "at the roof", not above
# it: a sample must beat a measured figure by this much to raise it (attnspec.reports.measured)
BASELINE_ELEMENT_BYTES = 2  # the H100 baseline is judged in bf16
TARGET_FRACTION = 0.6  # a baseline implementation worth comparing to reaches this (issue 14)
SLOW_ROW_S = 50e-6  # rows at least this long are held to TARGET_FRACTION


class Roof(Protocol):
    """Any device roof: attnspec.reports.hardware.DeviceRoof fits."""

    @property
    def name(self) -> str: ...
    @property
    def peak_flops(self) -> float | None: ...
    @property
    def bandwidth(self) -> float | None: ...
    @property
    def cache_name(self) -> str: ...
    @property
    def cache_bytes(self) -> int | None: ...
    @property
    def cache_bandwidth(self) -> float | None: ...


def as_traffic(cost: Cost | Traffic) -> Traffic:
    """A Traffic; a flat Cost counts all its bytes as compulsory (nothing re-read)."""
    return cost if isinstance(cost, Traffic) else Traffic(cost.flops, cost.bytes)


@dataclass
class Record:
    """One benchmark's measurement and analytic traffic, as plain numbers.

    `flops`, `bytes` (compulsory), `rereads` and `working_set` are the traffic at the run's
    dtype; the `baseline_` ones the same op at 2-byte elements. `seconds` is the median time
    per call (None when benchmarks ran untimed); `spread` its interquartile range;
    `floor_seconds` the same call on a minimal input (the per-call floor). `check` is "ok",
    or "FAIL <clause>: ..." when the benchmarked output did not match the float64 reference.
    `run` numbers the pass of a --repeat-report session.
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
    rereads: float = 0.0
    working_set: float = 0.0
    baseline_rereads: float = 0.0
    baseline_working_set: float = 0.0
    floor_seconds: float | None = None
    run: int = 1

    @property
    def failed(self) -> bool:
        return self.check.startswith("FAIL")

    def traffic(self, baseline: bool = False) -> Traffic:
        if baseline:
            return Traffic(
                self.baseline_flops,
                self.baseline_bytes,
                self.baseline_rereads,
                self.baseline_working_set,
            )
        return Traffic(self.flops, self.bytes, self.rereads, self.working_set)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Figures:
    """A record judged against one roof (bytes at main memory and at the cache level)."""

    roof: str
    intensity: float  # FLOPs per main-memory byte
    dram_bytes: float
    cache_level_bytes: float
    flop_rate: float | None
    byte_rate: float | None  # main-memory bytes per second
    bound_seconds: float | None  # the slowest roof's time
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


def has_roof(roof: Roof) -> bool:
    return roof.peak_flops is not None and roof.bandwidth is not None


def bound_seconds(traffic: Traffic, roof: Roof) -> float | None:
    """The roofline's lower bound on time: the slowest of compute, main memory and the cache
    level (attnspec.specs.cost.level_seconds); None without a roof."""
    if roof.peak_flops is None or roof.bandwidth is None:
        return None
    times = level_seconds(
        traffic, roof.peak_flops, roof.bandwidth, roof.cache_bandwidth, roof.cache_bytes
    )
    return max(times.values())


def overhead_bound(seconds: float | None, floor: float | None) -> bool:
    """Fixed per-call cost, not the roof, sets the time."""
    if seconds is None:
        return False
    return seconds < LAUNCH_BOUND_S or (floor is not None and floor >= OVERHEAD_SHARE * seconds)


def verdict(
    traffic: Traffic, roof: Roof, seconds: float | None = None, floor: float | None = None
) -> str:
    """overhead-bound, else attnspec.specs.cost.hierarchical_verdict on the roof's levels."""
    if overhead_bound(seconds, floor):
        return "overhead-bound"
    if roof.peak_flops is None or roof.bandwidth is None:
        return "unknown roof"
    found = hierarchical_verdict(
        traffic,
        roof.peak_flops,
        roof.bandwidth,
        roof.cache_bandwidth,
        roof.cache_bytes,
        roof.cache_name,
    )
    if is_measured(roof):
        t = level_seconds(
            traffic, roof.peak_flops, roof.bandwidth, roof.cache_bandwidth, roof.cache_bytes
        )
        memory = max(t["dram"], t.get("cache", 0.0))
        if max(memory, t["compute"]) < RIDGE_BAND * min(memory, t["compute"]):
            level = "DRAM" if t["dram"] >= t.get("cache", 0.0) else roof.cache_name
            return f"balanced (compute ≈ {level})"
    return found


def is_measured(roof: Roof) -> bool:
    """Whether the roof's peak or bandwidth was measured on this machine (not a spec or an
    override): only a measured ridge moves with the machine's state."""
    sources = (getattr(roof, "peak_source", ""), getattr(roof, "bandwidth_source", ""))
    return any(str(s).startswith("measured") for s in sources)


def figures(
    traffic: Traffic, roof: Roof, seconds: float | None, floor: float | None = None
) -> Figures:
    """Achieved rates and the fraction of the roof attained by a run of `seconds`."""
    dram, cached = level_bytes(traffic, roof.cache_bytes)
    bound = bound_seconds(traffic, roof)
    t = seconds if seconds is not None and seconds > 0 else None
    return Figures(
        roof=roof.name,
        intensity=traffic.flops / dram,
        dram_bytes=dram,
        cache_level_bytes=cached,
        flop_rate=None if t is None else traffic.flops / t,
        byte_rate=None if t is None else dram / t,
        bound_seconds=bound,
        fraction=None if t is None or bound is None else bound / t,
        verdict=verdict(traffic, roof, seconds, floor),
    )


def analyse(record: Record, roof: Roof, baseline: Roof) -> Row:
    """Judge `record` on its device's roof (measured time) and on the baseline (intensity only)."""
    row = Row(
        record=record,
        device=figures(record.traffic(), roof, record.seconds, record.floor_seconds),
        baseline=figures(record.traffic(baseline=True), baseline, None),
    )
    probe = record.extras.get("probe")
    if probe and probe.get("seconds"):
        bound = bound_seconds(Traffic(probe["flops"], probe["bytes"]), roof)
        if bound is not None:
            probe["fraction"] = bound / probe["seconds"]
    row.notes.extend(judge_notes(row))
    return row


def judge_notes(row: Row) -> list[str]:
    """Above the roof, overhead-bound, or short of TARGET_FRACTION: say so in one line."""
    r, d = row.record, row.device
    floor = f"per-call floor {r.floor_seconds * 1e6:.3g} µs" if r.floor_seconds else ""
    if d.verdict == "overhead-bound":
        return [floor or "under 10 µs: launch overhead"]
    if d.fraction is None:
        return []
    if d.fraction > 1 + ROOF_PRECISION:
        return [f"above calibrated roof ({d.fraction:.2f}x): recalibrate"]
    if d.fraction > 1:
        return [f"at the roof ({d.fraction:.3f}x, within the ceiling's {ROOF_PRECISION:.0%})"]
    if r.seconds is not None and r.seconds >= SLOW_ROW_S and d.fraction < TARGET_FRACTION:
        if r.floor_seconds and r.floor_seconds >= OVERHEAD_NOTE_SHARE * r.seconds:
            return [f"per-call overhead: {floor} of {r.seconds * 1e6:.3g} µs"]
        probe = r.extras.get("probe") or {}
        if "fraction" not in probe:
            why = r.extras.get("why")
            return [f"below {TARGET_FRACTION:.0%} of roof: {why}"] if why else []
        kind = probe.get("kind", "BLAS")  # what the probe times alone: a GEMM, or a copy
        limit = f"the {kind} limit" if probe["fraction"] < TARGET_FRACTION else f"not the {kind}"
        return [
            f"below {TARGET_FRACTION:.0%} of roof, {limit}: {probe['what']} alone reaches "
            f"{min(probe['fraction'], 1.0):.0%} (single-op probe)"
        ]
    return []


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
    """Add cross-row comparisons to the rows' notes: chunked vs recurrent, tiled vs SDPA,
    cached generation vs recompute (measured)."""
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
        bound = bound_seconds(Traffic(flops, nbytes), roof)
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
    """One line per op group and roof: which cases are bound by which level, or by overhead."""
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


def repeat_key(r: Record) -> tuple[str, ...]:
    """What identifies one benchmark row across the passes of --repeat-report."""
    return (r.group, r.impl, r.variant, r.case, r.dtype, r.device)


def repeatability(rows: list[Row]) -> list[dict[str, Any]]:
    """Per benchmark row seen in more than one pass: % of roof per pass, spread, verdicts."""
    found: dict[tuple[str, ...], list[Row]] = defaultdict(list)
    for row in rows:
        found[repeat_key(row.record)].append(row)
    out = []
    for (group, impl, variant, case, dtype, _), members in found.items():
        if len(members) < 2:
            continue
        fractions = [m.device.fraction for m in members]
        known = [f for f in fractions if f is not None]
        verdicts = [m.device.verdict for m in members]
        out.append(
            {
                "group": group,
                "impl": impl,
                "variant": variant,
                "case": case,
                "dtype": dtype,
                "runs": [m.record.run for m in members],
                "fractions": fractions,
                "spread": max(known) - min(known) if known else None,
                "verdicts": verdicts,
                "verdict_changed": len(set(verdicts)) > 1,
            }
        )
    return out


def section_spread(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per op group: the largest and median spread of % of roof, and verdict changes."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        groups[e["group"]].append(e)
    out = []
    for group, members in groups.items():
        spreads = sorted(e["spread"] for e in members if e["spread"] is not None)
        out.append(
            {
                "group": group,
                "rows": len(members),
                "max_spread": spreads[-1] if spreads else None,
                "median_spread": spreads[len(spreads) // 2] if spreads else None,
                "verdict_changes": sum(e["verdict_changed"] for e in members),
            }
        )
    return out
