"""Which device is this, and which roof (peak FLOP/s, bandwidth) do verdicts use?

Precedence for each of the two figures: an explicit argument (the lead wires
``--peak-flops`` / ``--bandwidth`` to it), then $ATTNSPEC_PEAK_FLOPS / $ATTNSPEC_BANDWIDTH,
then the published spec of a recognised GPU, then the measured roof. A GPU whose name
is not in the table is reported as unknown with the properties torch gives; it is
never mapped to a neighbour. Without a GPU the detected device is the CPU and its
roof is the measured one. The roof (``DeviceRoof``) and the override parser live in
``attnspec.reports.hardware``, which needs no torch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

from attnspec.reports import cache_probe, timing
from attnspec.reports.calibrate import Measured, calibrate
from attnspec.reports.hardware import SPECS, DeviceRoof, DeviceSpec, cpu_name, parse_rate

PEAK_ENV = "ATTNSPEC_PEAK_FLOPS"
BANDWIDTH_ENV = "ATTNSPEC_BANDWIDTH"

# torch.cuda.get_device_name() strings, matched whole and case-insensitively.
_NAME_PATTERNS: dict[str, tuple[str, ...]] = {
    "h100-sxm": (r"NVIDIA H100 80GB HBM3", r"NVIDIA H100 SXM5 80GB"),
    "h100-pcie": (r"NVIDIA H100 PCIe",),
    "h200-sxm": (r"NVIDIA H200", r"NVIDIA H200 141GB HBM3e"),
    "a100-40gb": (r"NVIDIA A100-SXM4-40GB", r"NVIDIA A100-PCIE-40GB"),
    "a100-80gb-sxm": (r"NVIDIA A100-SXM4-80GB",),
    "a100-80gb-pcie": (r"NVIDIA A100 80GB PCIe", r"NVIDIA A100-PCIE-80GB"),
    "l40s": (r"NVIDIA L40S",),
    "l4": (r"NVIDIA L4",),
    "rtx-4090": (r"NVIDIA GeForce RTX 4090",),
    "b200": (r"NVIDIA B200",),
    "mi300x": (r"AMD Instinct MI300X", r"AMD Instinct MI300X OAM"),
}


def match_spec(name: str) -> DeviceSpec | None:
    """The table entry whose known torch names include ``name`` exactly; else None."""
    normal = " ".join(name.split())
    for key, patterns in _NAME_PATTERNS.items():
        if any(re.fullmatch(p, normal, re.IGNORECASE) for p in patterns):
            return SPECS[key]
    return None


def _override(
    value: object, env: Mapping[str, str], var: str, what: str, arg: str
) -> tuple[float, str] | None:
    if value is not None:
        return parse_rate(value, what, arg), f"override ({arg})"
    if env.get(var, "").strip():
        return parse_rate(env[var], what, f"${var}"), f"override (${var})"
    return None


def _cuda_properties(dev: torch.device) -> dict[str, object]:
    props = torch.cuda.get_device_properties(dev)
    out: dict[str, object] = {
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "total_memory_bytes": int(props.total_memory),
        "multi_processor_count": int(props.multi_processor_count),
    }
    for attr in ("L2_cache_size", "gcnArchName"):
        if hasattr(props, attr):
            out[attr] = getattr(props, attr)
    return out


def _settle(
    override: tuple[float, str] | None,
    spec: DeviceSpec | None,
    published: float | None,
    measured: Measured | None,
    figure: str,
) -> tuple[float | None, str]:
    if override is not None:
        return override
    if spec is not None and published is not None:
        return published, f"spec table ({spec.key})"
    if measured is not None:
        return measured.source(figure)
    return None, "unknown"


def resolve_device(
    device: str = "cpu",
    *,
    dtype: str | None = None,
    peak_flops: float | str | None = None,
    bandwidth: float | str | None = None,
    recalibrate: bool = False,
    calibrate_roof: bool = True,
    calibration_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> DeviceRoof:
    """Detect ``device`` and settle the roof its verdicts use (see the module docstring).

    ``peak_flops`` / ``bandwidth`` are the values of the --peak-flops / --bandwidth options
    (numbers or strings such as "989e12"); errors and sources name them that way.
    ``dtype`` picks the peak (tensor BF16/FP16, or FP32) and the GEMM dtype measured;
    it defaults to float32 on CPU and bfloat16 on GPU. ``calibrate_roof=False`` skips
    measuring when nothing is cached (the measured figures are then None).
    """
    env = os.environ if env is None else env
    peak_o = _override(peak_flops, env, PEAK_ENV, "peak FLOP/s", "--peak-flops")
    bw_o = _override(bandwidth, env, BANDWIDTH_ENV, "bandwidth (bytes/s)", "--bandwidth")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device {device!r} is not a torch device ({err})") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: only cpu and cuda devices are supported")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA device")
    dtype = dtype or ("float32" if dev.type == "cpu" else "bfloat16")
    notes: list[str] = []

    spec: DeviceSpec | None = None
    if dev.type == "cpu":
        name, props = f"{cpu_name()} ({torch.get_num_threads()} threads)", {}
    else:
        props = _cuda_properties(dev)
        name = str(props["name"])
        spec = match_spec(name)
        if spec is None:
            notes.append(
                f"unknown GPU {name!r}: not in the spec table, no published roof assumed; "
                "verdicts use the measured roof unless --peak-flops/--bandwidth are given"
            )
    measured = None
    if calibrate_roof or recalibrate:
        measured = calibrate(device, dtype, path=calibration_path, recalibrate=recalibrate)

    spec_peak = spec.peak_flops(dtype) if spec else None
    peak, peak_src = _settle(peak_o, spec, spec_peak, measured, "gemm_flops")
    bw, bw_src = _settle(bw_o, spec, spec.bandwidth if spec else None, measured, "bandwidth")
    if peak is None or bw is None:
        notes.append("roof incomplete: verdicts on this device read 'unknown roof'")
    cache_name, cache_size, cache_bw, cache_src = _cache_roof(dev, props, spec, measured)
    return DeviceRoof(
        name=name,
        kind=dev.type,
        device=str(dev),
        dtype=dtype,
        spec=spec,
        measured=measured,
        peak_flops=peak,
        bandwidth=bw,
        peak_source=peak_src,
        bandwidth_source=bw_src,
        properties=props,
        notes=tuple(notes),
        cache_name=cache_name,
        cache_bytes=cache_size,
        cache_bandwidth=cache_bw,
        cache_source=cache_src,
    )


def _cache_roof(
    dev: torch.device,
    props: Mapping[str, object],
    spec: DeviceSpec | None,
    measured: Measured | None,
) -> tuple[str, int | None, float | None, str]:
    """(level name, size, bandwidth, source) of the last cache level: on a CPU the size its
    tenant holds (probed by the calibration; the OS's figure when nothing was probed), on a
    GPU the driver's or the spec table's; the bandwidth published where it is, else measured."""
    size: int | None
    if dev.type == "cpu":
        name, size, size_src = "LLC", timing.cpu_cache_bytes(), "size from sysfs"
        if measured is not None and measured.cache_rates and measured.cache_held:
            size = measured.cache_held
            size_src = cache_probe.held_source(
                measured.cache_held, measured.cache_bytes, measured.cache_nominal
            )
    else:
        l2 = props.get("L2_cache_size")
        size = spec.l2_bytes if spec and spec.l2_bytes else (int(str(l2)) if l2 else None)
        name, size_src = (
            "L2",
            "size from spec table" if spec and spec.l2_bytes else "size from driver",
        )
    if spec is not None and spec.l2_bandwidth is not None:
        return name, size, spec.l2_bandwidth, f"{size_src}; bandwidth from spec table ({spec.key})"
    if measured is not None and measured.cache_bandwidth is not None:
        where = f"copy inside the {name}, {measured.device_key}, {measured.measured_at}"
        return name, size, measured.cache_bandwidth, f"{size_src}; bandwidth measured ({where})"
    if measured is not None:
        why = measured.rejected.get("cache", "not measured")
        return name, size, None, f"{size_src}; measured bandwidth rejected ({why})"
    return name, size, None, f"{size_src}; bandwidth unknown"
