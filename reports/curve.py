"""Latency vs throughput: predicted curves of a model's decode step on device roofs, the
measured decode steps of the tiny decoder beside them, their tables and the plot.

The math is attnspec.specs.cost_curve's; this module picks the roofs and memory sizes, gathers the
benchmark's "latency" rows, and renders the JSON block, the tables and ``latency.png`` (x:
throughput in tokens/s, y: TPOT in ms, one line per context length, measured points over the
predicted lines, the memory stop and the knees marked).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from attnspec.reports import render
from attnspec.reports.hardware import DATASHEETS, DeviceRoof
from attnspec.specs.cost import DecoderShape
from attnspec.specs.cost_curve import CONTEXTS, GRID, Curve, latency_curves
from attnspec.specs.presets import ModelConfig

GROUP = "latency"  # the benchmark group of the measured decode steps
DEFAULT_MODEL = "Llama-3-8B"
SPEC_DEVICES = ("h100-sxm", "h200-sxm")  # the spec roofs every report draws
MODEL_E = 2  # the real models' curves are for bf16 weights and caches

# Device memory (bytes, as the datasheets of attnspec.reports.hardware quote it: "80GB" is 80e9).
MEMORY_BYTES: dict[str, float] = {
    "h100-sxm": 80e9,
    "h100-pcie": 80e9,
    "h200-sxm": 141e9,
    "a100-40gb": 40e9,
    "a100-80gb-sxm": 80e9,
    "a100-80gb-pcie": 80e9,
    "l40s": 48e9,
    "l4": 24e9,
    "rtx-4090": 24e9,
    "b200": 180e9,  # HGX B200, per GPU (1.44 TB over 8)
    "mi300x": 192e9,
}


@dataclass
class CurveSet:
    """One model's predicted curves (one per context) on one roof."""

    model: str
    device: str
    E: int | float
    peak_flops: float
    bandwidth: float
    memory_bytes: float | None
    memory_source: str
    roof_source: str
    curves: list[Curve] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "device": self.device,
            "E": self.E,
            "peak_flops": self.peak_flops,
            "bandwidth": self.bandwidth,
            "memory_bytes": self.memory_bytes,
            "memory_source": self.memory_source,
            "roof_source": self.roof_source,
            "curves": [c.to_dict() for c in self.curves],
        }


def host_memory() -> float | None:
    """The machine's physical memory in bytes (None where sysconf can't say)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def roof_memory(roof: DeviceRoof) -> tuple[float | None, str]:
    """The memory a roof's device holds, and where the figure came from."""
    size = roof.properties.get("total_memory_bytes") if roof.properties else None
    if isinstance(size, (int, float)) and size > 0:
        return float(size), "torch.cuda total_memory"
    if roof.spec is not None and roof.spec.key in MEMORY_BYTES:
        return MEMORY_BYTES[roof.spec.key], f"spec table ({roof.spec.key})"
    if roof.kind == "cpu":
        host = host_memory()
        return host, "physical memory (sysconf)" if host else "unknown"
    return None, "unknown"


def spec_curves(
    shape: DecoderShape, model: str, key: str, contexts: tuple[int, ...] = CONTEXTS
) -> CurveSet:
    """`model` in bf16 on the spec-table device `key` (its dense BF16 peak and bandwidth)."""
    if key not in DATASHEETS:
        known = ", ".join(DATASHEETS)
        raise ValueError(f"unknown device spec {key!r}; choose from {known}")
    spec = DATASHEETS[key]
    memory = MEMORY_BYTES.get(key)
    return CurveSet(
        model=model,
        device=spec.name,
        E=MODEL_E,
        peak_flops=spec.tensor_flops,
        bandwidth=spec.bandwidth,
        memory_bytes=memory,
        memory_source=f"spec table ({key})" if memory else "unknown",
        roof_source=f"spec table ({key}): dense BF16",
        curves=latency_curves(shape, MODEL_E, spec.tensor_flops, spec.bandwidth, memory, contexts),
    )


def roof_curves(
    shape: DecoderShape,
    model: str,
    roof: DeviceRoof,
    E: int | float = MODEL_E,
    contexts: tuple[int, ...] = CONTEXTS,
    batches: tuple[int, ...] = GRID,
    memory: float | None = None,
) -> CurveSet | None:
    """`model` on a detected roof (None when its peak or bandwidth is unknown)."""
    if roof.peak_flops is None or roof.bandwidth is None:
        return None
    size, source = (memory, "override (--memory)") if memory else roof_memory(roof)
    return CurveSet(
        model=model,
        device=f"{roof.name} [{roof.dtype} roof]",
        E=E,
        peak_flops=roof.peak_flops,
        bandwidth=roof.bandwidth,
        memory_bytes=size,
        memory_source=source,
        roof_source=f"peak {roof.peak_source}; bandwidth {roof.bandwidth_source}",
        curves=latency_curves(shape, E, roof.peak_flops, roof.bandwidth, size, contexts, batches),
    )


# --- the benchmark's measured decode steps -------------------------------------------------


def measured_points(rows: list[Any]) -> list[dict[str, Any]]:
    """Each timed "latency" row: measured TPOT and throughput beside the roof's prediction for
    the same shapes (the row's bound time), and measured / predicted."""
    out = []
    for row in rows:
        r = row.record
        if r.group != GROUP:
            continue
        B, T = int(r.shape["B"]), int(r.shape["T"])
        predicted = row.device.bound_seconds
        out.append(
            {
                "impl": r.impl,
                "device": r.device,
                "dtype": r.dtype,
                "B": B,
                "T": T,
                "context": int(r.shape.get("context", T)),
                "tpot_s": r.seconds,
                "throughput_tok_s": B / r.seconds if r.seconds else None,
                "predicted_tpot_s": predicted,
                "predicted_throughput_tok_s": B / predicted if predicted else None,
                "ratio": r.seconds / predicted if r.seconds and predicted else None,
                "bound": row.device.verdict,
                "check": r.check,
            }
        )
    return out


def tiny_config(rows: list[Any]) -> ModelConfig | None:
    """The tiny decoder the "latency" rows ran (their shape carries its dimensions)."""
    for row in rows:
        r = row.record
        if r.group == GROUP:
            s = r.shape
            dims = {k: int(s[k]) for k in ("layers", "d_model", "n_heads", "n_kv_heads")}
            dims |= {k: int(s[k]) for k in ("head_dim", "d_ff", "vocab")}
            tied = bool(s.get("tied_embeddings", False))
            return ModelConfig("tiny decoder", **dims, tied_embeddings=tied)
    return None


def bench_block(
    rows: list[Any], roofs: dict[str, DeviceRoof], shapes: str | None = None
) -> dict[str, Any]:
    """The report's "latency" block: measured points, the tiny decoder's predicted curves on
    each device that ran them, and the model's (``--shapes``, else Llama-3-8B) on the H100,
    the H200 and the detected roofs."""
    from attnspec.specs.dtypes import BYTES_PER_ELEMENT
    from attnspec.specs.presets import model

    measured = measured_points(rows)
    tiny = tiny_config(rows)
    measured_sets = []
    for roof in roofs.values():
        mine = [p for p in measured if p["device"] == roof.device]
        for dtype in dict.fromkeys(p["dtype"] for p in mine):
            if tiny is None or (roof.kind != "cpu" and dtype != roof.dtype):
                continue
            points = [p for p in mine if p["dtype"] == dtype]
            contexts = tuple(sorted({p["T"] for p in points}))
            top = 4 * max(p["B"] for p in points)
            batches = tuple(b for b in GRID if b <= top)
            E = BYTES_PER_ELEMENT[dtype]
            found = roof_curves(tiny, "tiny decoder", roof, E, contexts, batches)
            if found is not None:
                measured_sets.append(found.to_dict() | {"measured": points})
    try:
        config = model(shapes or DEFAULT_MODEL)
    except ValueError:
        config = model(DEFAULT_MODEL)  # --shapes names a model without a whole-model config
    predicted = [spec_curves(config, config.name, key) for key in SPEC_DEVICES]
    for roof in roofs.values():
        found = roof_curves(config, config.name, roof)
        if found is not None:
            predicted.append(found)
    return {
        "measured": measured,
        "measured_curves": measured_sets,
        "predicted": [s.to_dict() for s in predicted],
        "plot": "latency.png",
    }


# --- tables --------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    """0.00898 -> "8.98 ms", 2.47 -> "2.47 s"."""
    return render.seconds(seconds)


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f} tok/s" if value >= 100 else f"{value:.3g} tok/s"


def _times(ratio: float) -> str:
    """measured / predicted: "1.35x", "47x", "1,650x"."""
    return f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.3g}x"


def _gb(value: float | None) -> str:
    return "unknown memory" if value is None else f"{value / 1e9:.4g} GB"


def marks(curve: dict[str, Any], B: int) -> str:
    """What a point of a curve marks: the knees, the memory stop."""
    out = []
    if B == curve["half_throughput_knee"]:
        out.append("half-throughput knee")
    if B == curve["compute_knee"]:
        out.append("compute knee")
    if curve["stopped_by_memory"] and B == curve["max_batch"]:
        out.append("memory stop")
    return ", ".join(out)


def curve_title(s: dict[str, Any]) -> str:
    dtype = {2: "bf16", 4: "float32", 1: "8-bit"}.get(s["E"], f"{s['E']}-byte")
    return (
        f"{s['model']} ({dtype}) on {s['device']}: {s['peak_flops'] / 1e12:.4g} TFLOP/s, "
        f"{s['bandwidth'] / 1e12:.4g} TB/s, {_gb(s['memory_bytes'])} ({s['memory_source']})"
    )


def curve_table(s: dict[str, Any], *, fmt: str = "github") -> str:
    """Every point of a curve set: T, B, TPOT, throughput, bound, marks."""
    body = []
    for c in s["curves"]:
        for p in c["points"]:
            body.append(
                [
                    c["T"],
                    p["B"],
                    _ms(p["tpot_s"]),
                    _rate(p["throughput_tok_s"]),
                    f"{p['intensity']:.3g}",
                    "compute" if p["compute_bound"] else "memory",
                    marks(c, p["B"]),
                ]
            )
    headers = ["T", "B", "TPOT", "throughput", "FLOP/B", "bound", "mark"]
    return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)


def curve_summary(s: dict[str, Any]) -> list[str]:
    """One line per context: B=1, the knees and the memory stop."""
    lines = []
    for c in s["curves"]:
        by_b = {p["B"]: p for p in c["points"]}
        first = by_b.get(1)
        parts = [f"T={c['T']}"]
        if first:
            parts.append(f"B=1 {_ms(first['tpot_s'])}, {_rate(first['throughput_tok_s'])}")
        for label, B in (
            ("half-throughput knee", c["half_throughput_knee"]),
            ("compute knee", c["compute_knee"]),
        ):
            if B is not None and B in by_b:
                p = by_b[B]
                parts.append(f"{label} B={B} {_ms(p['tpot_s'])}, {_rate(p['throughput_tok_s'])}")
        if c["compute_knee"] is None:
            parts.append("never compute-bound")
        if c["stopped_by_memory"]:
            p = by_b[c["max_batch"]]
            parts.append(
                f"memory stop B={c['max_batch']} {_ms(p['tpot_s'])}, {_rate(p['throughput_tok_s'])}"
            )
        elif c["points"]:
            parts.append(f"fits up to B={c['points'][-1]['B']}")
        lines.append("; ".join(parts))
    return lines


def measured_table(points: list[dict[str, Any]], *, fmt: str = "simple") -> str:
    headers = [
        "impl",
        "case",
        "dtype",
        "TPOT",
        "predicted",
        "measured / predicted",
        "throughput",
        "predicted",
        "bound here",
        "check",
    ]
    body = [
        [
            p["impl"],
            f"B={p['B']} T={p['T']}",
            p["dtype"],
            _ms(p["tpot_s"]),
            _ms(p["predicted_tpot_s"]),
            "-" if p["ratio"] is None else _times(p["ratio"]),
            _rate(p["throughput_tok_s"]),
            _rate(p["predicted_throughput_tok_s"]),
            p["bound"].replace("-bound", ""),
            p["check"],
        ]
        for p in points
    ]
    return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)


def section_text(block: dict[str, Any], *, fmt: str = "simple") -> str:
    """The latency section: the measured table, then each curve set (Markdown: every point;
    terminal: one line per context)."""
    md = fmt == "github"
    h3 = "### " if md else "-- "
    out = [f"{h3}latency vs throughput: decode step, TPOT = step time, throughput = B / step time"]
    if md:
        out.append(f"![latency vs throughput]({block['plot']})")
    if block["measured"]:
        out += [
            "",
            "measured decode steps (context T to T + a few tokens) beside the roofline's time "
            "for the same shapes on the same roof:",
            "",
            measured_table(block["measured"], fmt=fmt),
        ]
    for s in block["measured_curves"] + block["predicted"]:
        out += ["", f"{'#### ' if md else ''}{curve_title(s)}"]
        if md:
            out += ["", curve_table(s, fmt=fmt)]
        else:
            out += [f"  {line}" for line in curve_summary(s)]
    return "\n".join(out)


# --- the plot --------------------------------------------------------------------------------

T_COLORS = ("tab:blue", "tab:green", "tab:orange", "tab:red", "tab:purple", "tab:brown")
IMPL_MARKERS = ("o", "s", "D", "^", "v", "P")


def _panel(ax: Any, s: dict[str, Any], measured: list[dict[str, Any]]) -> None:
    """One curve set: a line per context, its marks, and the measured points of its roof."""
    contexts = [c["T"] for c in s["curves"]]
    color = {T: T_COLORS[i % len(T_COLORS)] for i, T in enumerate(contexts)}
    for c in s["curves"]:
        pts = c["points"]
        if not pts:
            continue
        xs = [p["throughput_tok_s"] for p in pts]
        ys = [p["tpot_s"] * 1e3 for p in pts]
        stop = f", memory full at B={c['max_batch']}" if c["stopped_by_memory"] else ""
        ax.plot(xs, ys, color=color[c["T"]], linewidth=2, label=f"T={c['T']:,}{stop}")
        by_b = {p["B"]: p for p in pts}
        for B, marker, size in (
            (c["half_throughput_knee"], "o", 60),
            (c["compute_knee"], "*", 160),
        ):
            if B is not None and B in by_b:
                p = by_b[B]
                ax.scatter(
                    p["throughput_tok_s"], p["tpot_s"] * 1e3, marker=marker, s=size,
                    facecolors="white", edgecolors=color[c["T"]], linewidths=1.8, zorder=4,
                )  # fmt: skip
        end = pts[-1]
        if c["stopped_by_memory"]:
            ax.scatter(
                end["throughput_tok_s"], end["tpot_s"] * 1e3, marker="X", s=110,
                color=color[c["T"]], edgecolors="black", linewidths=0.8, zorder=5,
            )  # fmt: skip
            ax.annotate(
                f"B={end['B']}", (end["throughput_tok_s"], end["tpot_s"] * 1e3),
                textcoords="offset points", xytext=(6, 2), fontsize=7, color=color[c["T"]],
            )  # fmt: skip
        else:
            ax.annotate(
                f"B={end['B']}", (end["throughput_tok_s"], end["tpot_s"] * 1e3),
                textcoords="offset points", xytext=(6, -8), fontsize=7, color=color[c["T"]],
            )  # fmt: skip
    impls = sorted({p["impl"] for p in measured})
    for p in measured:
        T = p["T"]
        if T not in color or p["throughput_tok_s"] is None:
            continue
        ax.scatter(
            p["throughput_tok_s"], p["tpot_s"] * 1e3, color=color[T], s=70, zorder=6,
            marker=IMPL_MARKERS[impls.index(p["impl"]) % len(IMPL_MARKERS)],
            edgecolors="red" if p["check"] != "ok" else "black", linewidths=0.8,
        )  # fmt: skip
        ax.annotate(
            f"B={p['B']} {_times(p['ratio'])}" if p["ratio"] else f"B={p['B']}",
            (p["throughput_tok_s"], p["tpot_s"] * 1e3), textcoords="offset points",
            xytext=(5, 4), fontsize=6.5, color="black",
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)
    ax.autoscale_view()
    lo, hi = ax.get_xlim()
    narrow = hi < 100 * lo  # under two decades: label the minor ticks too
    ax.xaxis.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:g}" if narrow and str(v)[0] in "25" else "")
    )
    ax.yaxis.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "2358" else "")
    )
    ax.set_xlabel("throughput (tokens/s, whole batch)")
    ax.set_ylabel("TPOT (ms per token, each request)")
    dtype = {2: "bf16", 4: "float32"}.get(s["E"], f"E={s['E']}")
    ax.set_title(
        f"{s['model']} {dtype} on {s['device']}\n{s['peak_flops'] / 1e12:.4g} TFLOP/s, "
        f"{s['bandwidth'] / 1e12:.3g} TB/s, {_gb(s['memory_bytes'])}",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.25)
    handles, _ = ax.get_legend_handles_labels()
    if measured:
        from matplotlib.lines import Line2D

        handles += [
            Line2D([], [], linestyle="", marker=IMPL_MARKERS[i % len(IMPL_MARKERS)],
                   color="grey", markeredgecolor="black", label=f"{name} measured (B, measured / predicted)")
            for i, name in enumerate(impls)
        ]  # fmt: skip
    ax.legend(handles=handles, fontsize=7, loc="best", title="context (line)", title_fontsize=7)


def plot(path: Path, block: dict[str, Any]) -> Path:
    """latency.png: one panel per curve set (the measured ones first), log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [(s, s["measured"]) for s in block["measured_curves"]]
    sets += [(s, []) for s in block["predicted"]]
    n = max(1, len(sets))
    cols = min(2, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols, 5.6 * rows), dpi=110, squeeze=False)
    for ax, (s, measured) in zip(axes.flat, sets, strict=False):
        _panel(ax, s, measured)
    for ax in list(axes.flat)[len(sets) :]:
        ax.axis("off")
    fig.suptitle(
        "Latency vs throughput of a decode step on the roofline: each line one context length T, "
        "B = 1, 2, 4, ... along it; o half-throughput knee (caches outweigh weights), "
        "* compute knee, X memory full",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
