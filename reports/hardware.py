"""Device roofs without torch: published peaks with their sources, the roof a verdict uses,
the host CPU's name, and rates given by the user.

Tensor FLOP/s are *dense* BF16/FP16 with FP32 accumulation. Datasheets headline the 2:4
sparse figure, exactly twice the dense one; sparse figures are never used here. FP32 is
the non-tensor (CUDA-core / vector) rate, which is what a float32 torch matmul gets
with TF32 off (torch's default). Bandwidth is the datasheet HBM/GDDR figure in bytes/s;
L2 is in bytes where the vendor states it (None otherwise). Values cross-checked against
the tables public repos quote (torchtitan's ``get_peak_flops``, LLM-Viewer, scaling book).
Every figure can be overridden (``parse_rate`` reads the override; ``attnspec.reports.detect``
applies it). Nothing here imports torch, so the benchmark plugin works without it.
"""

from __future__ import annotations

import math
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from attnspec.specs.cost import is_memory_bound, ridge

if TYPE_CHECKING:
    from attnspec.reports.measured import Measured

MiB = 1 << 20


@dataclass(frozen=True)
class DeviceSpec:
    """One accelerator's published roof."""

    key: str
    name: str
    tensor_flops: float
    fp32_flops: float | None
    bandwidth: float
    l2_bytes: int | None
    source: str
    l2_bandwidth: float | None = None  # only where a datasheet or whitepaper publishes it

    def peak_flops(self, dtype: str) -> float | None:
        """The peak that applies to matmuls in ``dtype`` (None when not published)."""
        if dtype in ("bfloat16", "float16"):
            return self.tensor_flops
        if dtype == "float32":
            return self.fp32_flops
        return None


_NV_H100 = "NVIDIA H100 Tensor Core GPU datasheet (2023) and Hopper whitepaper (L2 50 MB)"
_NV_A100 = "NVIDIA A100 Tensor Core GPU datasheet (2021) and Ampere GA100 whitepaper"
_NV_ADA = "NVIDIA Ada Lovelace architecture whitepaper v2.1, appendix"

DATASHEETS: dict[str, DeviceSpec] = {
    spec.key: spec
    for spec in (
        DeviceSpec(
            key="h100-sxm",
            name="NVIDIA H100 SXM5 80GB",
            tensor_flops=989e12,
            fp32_flops=67e12,
            bandwidth=3.35e12,
            l2_bytes=50 * MiB,
            source=f"{_NV_H100}: BF16 1979 sparse / 989 dense TFLOP/s, FP32 67 TFLOP/s, HBM3 3.35 TB/s",
        ),
        DeviceSpec(
            key="h100-pcie",
            name="NVIDIA H100 PCIe 80GB",
            tensor_flops=756e12,
            fp32_flops=51e12,
            bandwidth=2.0e12,
            l2_bytes=50 * MiB,
            source=f"{_NV_H100}: BF16 1513 sparse / 756 dense TFLOP/s, FP32 51 TFLOP/s, HBM2e 2.0 TB/s",
        ),
        DeviceSpec(
            key="h200-sxm",
            name="NVIDIA H200 SXM 141GB",
            tensor_flops=989e12,
            fp32_flops=67e12,
            bandwidth=4.8e12,
            l2_bytes=50 * MiB,
            source="NVIDIA H200 Tensor Core GPU datasheet (2024): BF16 1979 sparse / 989 dense TFLOP/s, FP32 67 TFLOP/s, HBM3e 4.8 TB/s; L2 as GH100",
        ),
        DeviceSpec(
            key="a100-40gb",
            name="NVIDIA A100 40GB",
            tensor_flops=312e12,
            fp32_flops=19.5e12,
            bandwidth=1.555e12,
            l2_bytes=40 * MiB,
            source=f"{_NV_A100}: BF16 624 sparse / 312 dense TFLOP/s, FP32 19.5 TFLOP/s, HBM2 1,555 GB/s, L2 40 MB",
        ),
        DeviceSpec(
            key="a100-80gb-sxm",
            name="NVIDIA A100 SXM4 80GB",
            tensor_flops=312e12,
            fp32_flops=19.5e12,
            bandwidth=2.039e12,
            l2_bytes=40 * MiB,
            source=f"{_NV_A100}: BF16 312 dense TFLOP/s, FP32 19.5 TFLOP/s, HBM2e 2,039 GB/s (SXM)",
        ),
        DeviceSpec(
            key="a100-80gb-pcie",
            name="NVIDIA A100 PCIe 80GB",
            tensor_flops=312e12,
            fp32_flops=19.5e12,
            bandwidth=1.935e12,
            l2_bytes=40 * MiB,
            source=f"{_NV_A100}: BF16 312 dense TFLOP/s, FP32 19.5 TFLOP/s, HBM2e 1,935 GB/s (PCIe)",
        ),
        DeviceSpec(
            key="l40s",
            name="NVIDIA L40S",
            tensor_flops=362e12,
            fp32_flops=91.6e12,
            bandwidth=0.864e12,
            l2_bytes=96 * MiB,
            source="NVIDIA L40S datasheet (2023): BF16 733 sparse / 362.05 dense TFLOP/s, FP32 91.6 TFLOP/s, GDDR6 864 GB/s; L2 96 MB (Ada whitepaper, AD102)",
        ),
        DeviceSpec(
            key="l4",
            name="NVIDIA L4",
            tensor_flops=121e12,
            fp32_flops=30.3e12,
            bandwidth=0.300e12,
            l2_bytes=48 * MiB,
            source="NVIDIA L4 datasheet (2023): BF16 242 sparse / 121 dense TFLOP/s, FP32 30.3 TFLOP/s, GDDR6 300 GB/s; L2 48 MB (Ada whitepaper, AD104)",
        ),
        DeviceSpec(
            key="rtx-4090",
            name="NVIDIA GeForce RTX 4090",
            tensor_flops=165.2e12,
            fp32_flops=82.6e12,
            bandwidth=1.008e12,
            l2_bytes=72 * MiB,
            source=f"{_NV_ADA}: FP16/BF16 tensor with FP32 accumulate 165.2 dense TFLOP/s (330.3 is FP16 accumulate), FP32 82.6 TFLOP/s, GDDR6X 1,008 GB/s, L2 72 MB",
        ),
        DeviceSpec(
            key="b200",
            name="NVIDIA B200",
            tensor_flops=2.25e15,
            fp32_flops=None,
            bandwidth=8e12,
            l2_bytes=None,
            source="NVIDIA Blackwell datasheet (HGX B200, per GPU): FP16/BF16 4.5 sparse / 2.25 dense PFLOP/s, HBM3e 8 TB/s",
        ),
        DeviceSpec(
            key="mi300x",
            name="AMD Instinct MI300X",
            tensor_flops=1307.4e12,
            fp32_flops=163.4e12,
            bandwidth=5.3e12,
            l2_bytes=None,
            source="AMD Instinct MI300X datasheet (2023): FP16/BF16 2614.9 sparse / 1307.4 dense TFLOP/s, FP32 vector 163.4 TFLOP/s, HBM3 5.3 TB/s",
        ),
    )
}

H100_SXM: DeviceSpec = DATASHEETS["h100-sxm"]
"""The baseline every report compares against."""
SPECS = DATASHEETS  # the old name, for code written before the rename


_SI = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}


class OverrideError(ValueError):
    """A peak FLOP/s or bandwidth override that is not a positive finite number."""


def parse_rate(value: object, what: str, origin: str) -> float:
    """``value`` as a positive finite rate; accepts 989e12 or "989e12" or "989T".

    ``what`` names the figure and ``origin`` where it came from ("--peak-flops",
    "$ATTNSPEC_BANDWIDTH"), so the error says exactly which value to fix.
    """
    if isinstance(value, bool):
        raise OverrideError(f"{what} from {origin} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        rate = float(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([-+0-9.eE]+|nan|inf)\s*([KMGTP]?)\s*", value, re.IGNORECASE)
        try:
            if match is None:
                raise ValueError(value)
            rate = float(match.group(1)) * _SI[match.group(2).upper()]
        except ValueError:
            raise OverrideError(
                f"{what} from {origin} must be a number such as 989e12, got {value!r}"
            ) from None
    else:
        raise OverrideError(f"{what} from {origin} must be a number, got {value!r}")
    if not (rate > 0 and math.isfinite(rate)):
        raise OverrideError(f"{what} from {origin} must be finite and > 0, got {value!r}")
    return rate


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it, else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@dataclass(frozen=True)
class DeviceRoof:
    """A device and the roof its verdicts use, with where each figure came from."""

    name: str
    kind: str
    device: str
    dtype: str
    spec: DeviceSpec | None
    measured: Measured | None
    peak_flops: float | None
    bandwidth: float | None
    peak_source: str
    bandwidth_source: str
    properties: dict[str, object] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    cache_name: str = "L2"
    cache_bytes: int | None = None
    cache_bandwidth: float | None = None
    cache_source: str = "unknown"

    @property
    def known(self) -> bool:
        """Whether a published spec was matched (always false on CPU)."""
        return self.spec is not None

    @property
    def ridge(self) -> float | None:
        """peak / bandwidth in FLOP/byte, None when either is unknown."""
        if self.peak_flops is None or self.bandwidth is None:
            return None
        return ridge(self.peak_flops, self.bandwidth)

    def verdict(self, intensity: float) -> str:
        """ "memory-bound", "compute-bound", or "unknown roof" at main memory on this device."""
        if self.peak_flops is None or self.bandwidth is None:
            return "unknown roof"
        bound = is_memory_bound(intensity, self.peak_flops, self.bandwidth)
        return "memory-bound" if bound else "compute-bound"

    @property
    def cache_ridge(self) -> float | None:
        """peak / cache bandwidth in FLOP per cache-level byte, None when either is unknown."""
        if self.peak_flops is None or self.cache_bandwidth is None:
            return None
        return ridge(self.peak_flops, self.cache_bandwidth)

    def to_dict(self) -> dict[str, object]:
        """Plain numbers and strings, for the JSON report."""
        out = asdict(self)
        out["ridge"] = self.ridge
        out["cache_ridge"] = self.cache_ridge
        out["known"] = self.known
        return out


def h100_baseline(dtype: str = "bfloat16") -> DeviceRoof:
    """The H100 SXM spec roof every report compares against."""
    peak = H100_SXM.peak_flops(dtype) or H100_SXM.tensor_flops
    source = f"spec table ({H100_SXM.key})"
    return DeviceRoof(
        name=H100_SXM.name,
        kind="baseline",
        device="",
        dtype=dtype,
        spec=H100_SXM,
        measured=None,
        peak_flops=peak,
        bandwidth=H100_SXM.bandwidth,
        peak_source=source,
        bandwidth_source=source,
        cache_name="L2",
        cache_bytes=H100_SXM.l2_bytes,
        cache_bandwidth=H100_SXM.l2_bandwidth,
        cache_source=f"L2 size: {source}; L2 bandwidth: not published, no cache roof drawn",
    )


H100_BASELINE = h100_baseline()
