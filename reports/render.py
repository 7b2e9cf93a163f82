"""Renderers for the roofline report: terminal tables, Markdown, JSON and a log-log plot.

Numbers stay plain in the JSON; only these renderers format them.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from tabulate import tabulate

from attnspec.reports.measured import ceiling_unit, confirmed
from attnspec.reports.roofline import ROOF_PRECISION, Roof, Row
from attnspec.specs.cost import attainable_flops
from attnspec.specs.cost import ridge as cost_ridge

GROUP_ORDER = (
    "matmul",
    "decode attention",
    "long-context decode",
    "prefill attention",
    "tiled attention",
    "linear attention",
    "kv-cache append",
    "generation",
    "latency",
    "cached vs recompute",
)


def short_verdict(verdict: str) -> str:
    """ "memory-bound (DRAM)" -> "memory (DRAM)", "overhead-bound" -> "overhead"."""
    return verdict.replace("-bound", "").replace("unknown roof", "unknown")


def si(value: float | None, unit: str, digits: int = 3, missing: str = "-") -> str:
    """1.23e10, "FLOP/s" -> "12.3 GFLOP/s"; None -> `missing`. The one SI formatter."""
    if value is None or not math.isfinite(value):
        return missing
    if value == 0:
        return f"0 {unit}"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g} {prefix}{unit}"
    return f"{value:.{digits}g} {unit}"


def seconds(value: float | None) -> str:
    """0.00123 -> "1.23 ms"."""
    if value is None:
        return "-"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def percent(value: float | None) -> str:
    """0.61 -> "61%"; never a figure over 100%: "100%" within ROOF_PRECISION above the roof
    (the note says "at the roof"), "above roof" beyond it (the note says to recalibrate)."""
    if value is None:
        return "-"
    if value > 1 + ROOF_PRECISION:
        return "above roof"
    return f"{100 * min(value, 1.0):.0f}%"


def number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.{digits}g}"


def ordered_groups(rows: list[Row]) -> list[tuple[str, list[Row]]]:
    """Rows grouped by op group, groups in GROUP_ORDER (others after, in order seen)."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[row.record.group].append(row)
    names = [g for g in GROUP_ORDER if g in groups] + [g for g in groups if g not in GROUP_ORDER]
    return [(g, groups[g]) for g in names]


def roofline_table(rows: list[Row], *, fmt: str = "simple") -> str:
    """One row per benchmark: time, achieved rates, intensity, roof fraction and verdicts."""
    short = fmt != "github"
    headers = [
        "impl",
        "op",
        "case",
        "dtype",
        "median ± IQR",
        "FLOP/s",
        "bytes/s",
        "FLOP/B",
        "roof",
        "bound here",
        "FLOP/B bf16",
        "bound H100",
        "check",
        "note",
    ]
    body = []
    for row in rows:
        r, d, b = row.record, row.device, row.baseline
        spread = f" ±{seconds(r.spread)}" if r.spread is not None else ""
        body.append(
            [
                r.impl,
                r.variant,
                r.case,
                r.dtype,
                seconds(r.seconds) + spread,
                si(d.flop_rate, "FLOP/s"),
                si(d.byte_rate, "B/s"),
                number(d.intensity),
                percent(d.fraction),
                short_verdict(d.verdict) if short else d.verdict,
                number(b.intensity),
                short_verdict(b.verdict) if short else b.verdict,
                "FAIL" if r.failed else r.check,
                "; ".join(row.notes),
            ]
        )
    return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)


def generation_table(rows: list[Row], *, fmt: str = "simple") -> str:
    """TTFT, TPOT (MLPerf) and throughput per generation benchmark."""
    headers = ["impl", "case", "dtype", "TTFT", "TPOT", "throughput", "tokens", "check"]
    body = []
    for row in rows:
        r = row.record
        if r.group != "generation" or not r.variant.startswith("TPOT"):
            continue
        ex = r.extras
        body.append(
            [
                r.impl,
                r.case,
                r.dtype,
                seconds(ex.get("ttft_s")),
                seconds(ex.get("tpot_s")),
                si(ex.get("throughput_tok_s"), "tok/s"),
                f"{ex.get('B', '?')}x{ex.get('N', '?')}",
                "FAIL" if r.failed else r.check,
            ]
        )
    return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True) if body else ""


def cache_table(comparisons: list[dict[str, Any]], *, fmt: str = "simple") -> str:
    """Cached generation vs full recompute: measured speedup beside the cost model's."""
    headers = [
        "impl",
        "case",
        "dtype",
        "cached",
        "recompute",
        "speedup",
        "predicted here",
        "predicted H100",
    ]
    body = [
        [
            c["impl"],
            c["case"],
            c["dtype"],
            seconds(c["cached_s"]),
            seconds(c["recompute_s"]),
            "-" if c["speedup"] is None else f"{c['speedup']:.1f}x",
            "-" if c["predicted_speedup"] is None else f"{c['predicted_speedup']:.1f}x",
            "-" if c["predicted_speedup_h100"] is None else f"{c['predicted_speedup_h100']:.1f}x",
        ]
        + (["FAIL"] if c["failed"] else [])
        for c in comparisons
    ]
    return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True) if body else ""


def roof_line(label: str, roof: Any) -> str:
    """'label: name — peak P (source), bandwidth W (source), ridge R; cache level, measured'."""
    ridge = getattr(roof, "ridge", None)
    ridge_text = "unknown" if ridge is None else f"{ridge:.1f} FLOP/B"
    line = (
        f"{label}: {roof.name} [{roof.dtype}] peak {si(roof.peak_flops, 'FLOP/s')} "
        f"({roof.peak_source}), bandwidth {si(roof.bandwidth, 'B/s')} "
        f"({roof.bandwidth_source}), ridge {ridge_text}"
    )
    size = getattr(roof, "cache_bytes", None)
    if size:
        line += (
            f"; {roof.cache_name} {size / (1 << 20):.3g} MiB at "
            f"{si(roof.cache_bandwidth, 'B/s', missing='unknown bandwidth')} ({roof.cache_source})"
        )
    m = getattr(roof, "measured", None)
    if m is not None:
        streams = ", ".join(f"{k} {si(v, 'B/s')}" for k, v in m.streams.items())
        gemms = ", ".join(f"{k} {si(v, 'FLOP/s')}" for k, v in m.gemms.items())
        line += (
            f"\n  calibration (best of {m.repeats}, {m.buffer_bytes >> 20} MiB buffers, "
            f"{m.measured_at}): streams {streams} -> roof {m.bandwidth_method}; "
            f"{m.cache_level} copy {si(m.cache_bandwidth, 'B/s')}; {m.gemm_dtype} GEMM {gemms} "
            f"-> peak {m.gemm_method}"
        )
        if m.ceiling:
            samples = ceiling_text(m)
            line += (
                f"\n  ceiling ({m.ceiling_samples} samples taken beside benchmarks, each "
                f"method's rate reached twice, last raised {m.ceiling_at or 'never'}): {samples}"
            )
        for name, why in m.rejected.items():
            line += f"\n  not trusted: {name} stream, {why}"
    return line


def ceiling_text(m: Any) -> str:
    """A Measured's ceiling, each method at its rate reached twice: "session gemv 70 GB/s, ..."."""
    return ", ".join(
        f"{k} {si(confirmed(v), ceiling_unit(k))}" for k, v in sorted(m.ceiling.items())
    )


def repeat_text(
    entries: list[dict[str, Any]], sections: list[dict[str, Any]], *, fmt: str = "simple"
) -> str:
    """Per row: % of roof in each pass, spread and verdict stability; then per section."""
    md = fmt == "github"
    headers = ["op", "impl", "variant", "case", "% of roof per pass", "spread", "verdict"]
    body = [
        [
            e["group"],
            e["impl"],
            e["variant"],
            e["case"],
            " / ".join(percent(f) for f in e["fractions"]),
            "-" if e["spread"] is None else f"{100 * e['spread']:.0f} pp",
            ("CHANGED: " + " / ".join(e["verdicts"])) if e["verdict_changed"] else e["verdicts"][0],
        ]
        for e in entries
    ]
    per_section = [
        [
            s["group"],
            s["rows"],
            "-" if s["max_spread"] is None else f"{100 * s['max_spread']:.0f} pp",
            "-" if s["median_spread"] is None else f"{100 * s['median_spread']:.0f} pp",
            s["verdict_changes"],
        ]
        for s in sections
    ]
    title = "## " if md else "-- "
    return "\n".join(
        [
            f"{title}repeatability over {len(entries[0]['fractions'])} passes",
            tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True),
            "",
            f"{title}spread per section (percentage points of roof)",
            tabulate(
                per_section,
                headers=["section", "rows", "max spread", "median spread", "verdict changes"],
                tablefmt=fmt,
                disable_numparse=True,
            ),
        ]
    )


def report_text(
    rows: list[Row],
    roofs: dict[str, Any],
    baseline: Any,
    comparisons: list[dict[str, Any]],
    summary: list[str],
    *,
    fmt: str = "simple",
    heading: str = "",
) -> str:
    """The whole report as text: roofs, one table per op group, generation, findings."""
    md = fmt == "github"
    h2, h3 = ("## ", "### ") if md else ("", "-- ")
    out = [heading] if heading else []
    roof_lines = [roof_line(f"device {d}", r) for d, r in roofs.items()]
    roof_lines.append(roof_line("baseline", baseline))
    out += [f"- {x}" for x in roof_lines] + [""] if md else roof_lines
    out.append(
        "FLOP/B: FLOPs per main-memory byte (re-reads whose working set fits the cache level "
        "are cache traffic); roof: the time the slowest roof allows over the measured time; "
        "bound here: the level that sets it on the device that ran it (overhead: most of the "
        "time is the same call's per-call floor); FLOP/B bf16 and bound H100: the same op "
        "with 2-byte elements on the H100 SXM roof."
    )
    for group, members in ordered_groups(rows):
        out += ["", f"{h3}{group}", roofline_table(members, fmt=fmt)]
    gen = generation_table(rows, fmt=fmt)
    if gen:
        out += ["", f"{h3}generation: TTFT, TPOT = (total - TTFT) / (tokens - 1), throughput", gen]
    cache = cache_table(comparisons, fmt=fmt)
    if cache:
        out += ["", f"{h3}cached generation vs full recompute (N new tokens)", cache]
    if summary:
        out += ["", f"{h2}verdicts" if md else "verdicts:"]
        out += [f"- {line}" for line in summary]
    failed = [r.record for r in rows if r.record.failed]
    if failed:
        out += ["", f"{h2}failing benchmarks" if md else "failing benchmarks:"]
        out += [f"- {r.impl} {r.group} {r.variant} {r.case}: {r.check}" for r in failed]
    return "\n".join(out)


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write `payload` as indented JSON (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return path


MARKERS = {
    "matmul": "o",
    "decode attention": "v",
    "long-context decode": "<",
    "prefill attention": "^",
    "tiled attention": "s",
    "linear attention": "D",
    "generation": "P",
    "latency": "h",
    "cached vs recompute": "X",
}


def _roof_curve(
    ax: Any, roof: Roof, xs: list[float], style: dict[str, Any], label: str, *, cache: bool = False
) -> None:
    """One roof, min(peak, intensity x bandwidth), with its ridge; `cache`: the cache level's
    roof (its bandwidth), drawn dashed."""
    bandwidth = roof.cache_bandwidth if cache else roof.bandwidth
    if roof.peak_flops is None or bandwidth is None:
        return
    ys = [attainable_flops(x, roof.peak_flops, bandwidth) for x in xs]
    ax.plot(xs, ys, label=label, **(style | ({"linestyle": "--"} if cache else {})))
    ridge = cost_ridge(roof.peak_flops, bandwidth)
    ax.axvline(ridge, color=style.get("color", "k"), linestyle=":", linewidth=0.8)
    ax.annotate(
        f"{roof.cache_name + ' ' if cache else ''}ridge {ridge:.3g}",
        (ridge, roof.peak_flops),
        textcoords="offset points",
        xytext=(4, -10 if cache else 4),
        fontsize=7,
        color=style.get("color", "k"),
    )


def plot(path: Path, rows: list[Row], roofs: dict[str, Any], baseline: Roof) -> Path | None:
    """Log-log hierarchical roofline PNG: each device's main-memory roof (solid) and cache roof
    (dashed), the H100's, and each timed benchmark a point at its main-memory intensity.

    Ops with no FLOPs (KV-cache append) have intensity 0 and can't sit on a log axis; they
    appear in the tables only.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [
        r
        for r in rows
        if r.device.flop_rate is not None and r.device.flop_rate > 0 and r.device.intensity > 0
    ]
    ridges = [
        cost_ridge(r.peak_flops, bw)
        for r in (*roofs.values(), baseline)
        for bw in (r.bandwidth, r.cache_bandwidth)
        if r.peak_flops and bw
    ]
    xs = [r.device.intensity for r in points] + ridges + [0.1]
    lo, hi = min(xs) / 4, max(xs) * 8
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    fig, ax = plt.subplots(figsize=(12, 6.5), dpi=120)
    colors = ["tab:blue", "tab:green", "tab:purple", "tab:brown"]
    for i, (device, roof) in enumerate(roofs.items()):
        style = {"color": colors[i % len(colors)], "linewidth": 2}
        _roof_curve(ax, roof, grid, style, f"{device}: {roof.name}, main memory")
        _roof_curve(ax, roof, grid, style, f"{device}: {roof.cache_name} (cache)", cache=True)
    style = {"color": "tab:red", "linewidth": 1.5, "alpha": 0.7}
    unpublished = "" if baseline.cache_bandwidth else "; L2 bandwidth unpublished, no L2 roof"
    _roof_curve(ax, baseline, grid, style, f"H100 SXM bf16, HBM (baseline{unpublished})")
    _roof_curve(ax, baseline, grid, style, "H100 SXM bf16, L2 (baseline)", cache=True)
    impls = sorted({r.record.impl for r in points})
    palette = ["tab:orange", "tab:cyan", "tab:olive", "tab:pink", "tab:gray", "black"]
    impl_color = {name: palette[i % len(palette)] for i, name in enumerate(impls)}
    for r in points:
        rec = r.record
        ax.scatter(
            r.device.intensity,
            r.device.flop_rate or 0.0,  # every point has a rate (see `points`)
            marker=MARKERS.get(rec.group, "o"),
            color=impl_color[rec.impl],
            edgecolors="red" if rec.failed else "black",
            linewidths=2 if rec.failed else 0.5,
            s=55,
            zorder=3,
        )
    roof_legend = ax.legend(fontsize=7, loc="upper left", title="roofs", title_fontsize=8)
    ax.add_artist(roof_legend)
    from matplotlib.lines import Line2D

    groups = list(dict.fromkeys(r.record.group for r in points))
    handles = [
        Line2D(
            [],
            [],
            linestyle="",
            marker=MARKERS.get(g, "o"),
            color="white",
            markeredgecolor="black",
            markersize=7,
            label=g,
        )
        for g in groups
    ] + [
        Line2D([], [], linestyle="", marker="o", color=impl_color[i], markersize=7, label=i)
        for i in impls
    ]
    if any(r.record.failed for r in points):
        handles.append(
            Line2D(
                [],
                [],
                linestyle="",
                marker="o",
                color="white",
                markeredgecolor="red",
                markeredgewidth=2,
                markersize=7,
                label="failed its check",
            )
        )
    ax.legend(
        handles=handles,
        fontsize=7,
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        title="op (marker), implementation (colour)",
        title_fontsize=8,
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("arithmetic intensity (FLOP per main-memory byte)")
    ax.set_ylabel("achieved FLOP/s")
    ax.set_title(
        "attnspec hierarchical roofline: main-memory roof solid, cache roof dashed; "
        "H100 SXM for reference"
    )
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
