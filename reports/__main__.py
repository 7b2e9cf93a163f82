"""``python -m attnspec.reports``: the detected device, its roof and ridge, and the H100 baseline.

With ``--latency`` (or ``--shapes MODEL`` / ``--device-spec KEY``) it draws a model's predicted
latency-vs-throughput curves instead (attnspec.reports.curve): on the spec-table devices named, else on
the H100, the H200 and the detected device; no benchmark runs.

Bad input (an override that is not a positive number, a device torch can't use, an
unreadable calibration cache) prints one line to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tabulate import tabulate

from attnspec.reports import curve, render
from attnspec.reports.hardware import DATASHEETS, DeviceRoof, h100_baseline, parse_rate
from attnspec.specs.cost import matmul_cost
from attnspec.specs.presets import model

PROG = "python -m attnspec.reports"


def si(value: float | None, unit: str) -> str:
    """render.si with "unknown" for a missing figure."""
    return render.si(value, unit, missing="unknown")


def describe(roof: DeviceRoof, title: str) -> list[str]:
    """Lines describing one device roof."""
    lines = [f"{title}: {roof.name}  [{roof.kind}, {roof.dtype}]"]
    if roof.kind == "cuda":
        lines.append(f"  properties     {json.dumps(roof.properties)}")
    if roof.spec is not None:
        spec = roof.spec
        lines.append(
            f"  spec           tensor {si(spec.tensor_flops, 'FLOP/s')} dense, "
            f"fp32 {si(spec.fp32_flops, 'FLOP/s')}, {si(spec.bandwidth, 'B/s')}"
        )
        lines.append(f"  source         {spec.source}")
    elif roof.kind != "baseline":
        lines.append("  spec           none (no published roof for this device)")
    m = roof.measured
    if m is not None:
        streams = ", ".join(f"{k} {si(v, 'B/s')}" for k, v in m.streams.items())
        lines.append(
            f"  measured       {streams} (read + write, {m.buffer_bytes >> 20} MiB buffers); "
            f"{m.cache_level} copy {si(m.cache_bandwidth, 'B/s')}"
        )
        lines.extend(f"  not trusted    {k}: {why}" for k, why in m.rejected.items())
        gemms = ", ".join(f"{k} {si(v, 'FLOP/s')}" for k, v in m.gemms.items())
        lines.append(f"                 GEMM {m.gemm_dtype}: {gemms}")
        threads = f", {m.threads} threads" if m.threads is not None else ""
        lines.append(f"                 best of {m.repeats}{threads}, at {m.measured_at}")
        if m.ceiling:
            lines.append(
                f"  ceiling        {render.ceiling_text(m)} "
                f"(reached twice in {m.ceiling_samples} samples)"
            )
    lines.append(f"  peak used      {si(roof.peak_flops, 'FLOP/s')}  <- {roof.peak_source}")
    lines.append(f"  bandwidth used {si(roof.bandwidth, 'B/s')}  <- {roof.bandwidth_source}")
    ridge = "unknown" if roof.ridge is None else f"{roof.ridge:.1f} FLOP/byte"
    lines.append(f"  ridge          {ridge}")
    if roof.cache_bytes:
        lines.append(
            f"  {roof.cache_name:<14} {roof.cache_bytes / (1 << 20):.3g} MiB, "
            f"{si(roof.cache_bandwidth, 'B/s')}  <- {roof.cache_source}"
        )
    lines.extend(f"  note           {note}" for note in roof.notes)
    return lines


def matmul_table(device: DeviceRoof, baseline: DeviceRoof) -> str:
    """The textbook batching example on both roofs: X(B×4096) @ W(4096×11008), bf16."""
    rows = []
    for B in (1, 16, 64, 256, 512):
        cost = matmul_cost(B, 4096, 11008, 2)
        rows.append(
            [
                B,
                f"{cost.intensity:.1f}",
                device.verdict(cost.intensity),
                baseline.verdict(cost.intensity),
            ]
        )
    headers = ["B", "FLOP/byte", "this device", "H100 SXM"]
    return tabulate(
        rows, headers=headers, colalign=("right", "right", "left", "left"), disable_numparse=True
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda if any, else cpu)"
    )
    parser.add_argument("--dtype", default=None, help="float32 / bfloat16 / float16 / float64")
    parser.add_argument("--peak-flops", default=None, help="override peak FLOP/s, e.g. 989e12")
    parser.add_argument(
        "--bandwidth", default=None, help="override bandwidth in bytes/s, e.g. 3.35e12"
    )
    parser.add_argument("--recalibrate", action="store_true", help="measure the roof again")
    parser.add_argument("--calibration-file", default=None, help="calibration cache (JSON)")
    parser.add_argument("--json", action="store_true", help="print the roofs as JSON")
    curves = parser.add_argument_group(
        "latency vs throughput", "predicted decode-step curves (no benchmark runs)"
    )
    curves.add_argument(
        "--latency",
        action="store_true",
        help="draw a model's curves on the detected device, the H100 and the H200",
    )
    curves.add_argument(
        "--shapes",
        default=None,
        metavar="MODEL",
        help=f"the model of the curves (implies --latency; default {curve.DEFAULT_MODEL})",
    )
    curves.add_argument(
        "--device-spec",
        action="append",
        default=None,
        metavar="KEY",
        help="spec-table device(s) to draw on instead of detecting one (implies --latency; "
        f"repeat or comma-separate): {', '.join(DATASHEETS)}",
    )
    curves.add_argument(
        "--memory", default=None, metavar="BYTES", help="override the detected device's memory"
    )
    curves.add_argument(
        "--report-dir",
        default="reports/out",
        metavar="DIR",
        help="where latency.png, latency.md and latency.json go (default reports/out)",
    )
    args = parser.parse_args(argv)
    if args.latency or args.shapes or args.device_spec:
        return latency_main(args)
    try:
        peak = (
            None
            if args.peak_flops is None
            else parse_rate(args.peak_flops, "peak FLOP/s", "--peak-flops")
        )
        bw = (
            None
            if args.bandwidth is None
            else parse_rate(args.bandwidth, "bandwidth (bytes/s)", "--bandwidth")
        )
        # torch (detect, calibrate) is imported here: the latency curves above need none
        import torch

        from attnspec.reports.detect import resolve_device

        if args.device is None:
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        roof = resolve_device(
            args.device,
            dtype=args.dtype,
            peak_flops=peak,
            bandwidth=bw,
            recalibrate=args.recalibrate,
            calibration_path=args.calibration_file,
        )
    except ValueError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    baseline = h100_baseline()
    if args.json:
        print(json.dumps({"device": roof.to_dict(), "baseline": baseline.to_dict()}, indent=2))
        return 0
    print("\n".join(describe(roof, "Detected device")))
    if roof.measured is not None:
        from attnspec.reports.calibrate import cache_path

        print(
            f"  cache          {cache_path(args.calibration_file)} (--recalibrate to measure again)"
        )
    print()
    print("\n".join(describe(baseline, "Baseline")))
    print()
    print("X(B×4096) @ W(4096×11008), 2-byte elements: verdict by batch size")
    print(matmul_table(roof, baseline))
    return 0


def latency_main(args: argparse.Namespace) -> int:
    """Predicted latency-vs-throughput curves: print them, write latency.png/.md/.json."""
    try:
        config = model(args.shapes or curve.DEFAULT_MODEL)
        memory = None if args.memory is None else parse_rate(args.memory, "memory", "--memory")
        if args.device_spec:
            keys = [k.strip() for arg in args.device_spec for k in arg.split(",") if k.strip()]
            sets = [curve.spec_curves(config, config.name, key) for key in keys]
        else:
            sets = [curve.spec_curves(config, config.name, key) for key in curve.SPEC_DEVICES]
            detected = detected_roof(args)
            found = curve.roof_curves(config, config.name, detected, memory=memory)
            if found is not None:
                sets.append(found)
    except ValueError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    block: dict[str, object] = {
        "measured": [],
        "measured_curves": [],
        "predicted": [s.to_dict() for s in sets],
        "plot": "latency.png",
    }
    out = Path(args.report_dir)
    png = curve.plot(out / "latency.png", block)
    md = render.write_text(out / "latency.md", curve.section_text(block, fmt="github"))
    js = render.write_json(out / "latency.json", block)
    if args.json:
        print(json.dumps(block, indent=2))
        return 0
    print(curve.section_text(block))
    print()
    for path in (png, md, js):
        print(f"latency report: {path}")
    return 0


def detected_roof(args: argparse.Namespace) -> DeviceRoof:
    """The detected device's roof with the command line's overrides (torch needed)."""
    peak = (
        None
        if args.peak_flops is None
        else parse_rate(args.peak_flops, "peak FLOP/s", "--peak-flops")
    )
    bw = (
        None
        if args.bandwidth is None
        else parse_rate(args.bandwidth, "bandwidth (bytes/s)", "--bandwidth")
    )
    import torch

    from attnspec.reports.detect import resolve_device

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_device(
        device,
        dtype=args.dtype,
        peak_flops=peak,
        bandwidth=bw,
        recalibrate=args.recalibrate,
        calibration_path=args.calibration_file,
    )


if __name__ == "__main__":
    sys.exit(main())
