"""A device's measured roof, as reports.calibrate measures it and reports.hardware shows it.

Its own module so that hardware (which only shows it) and calibrate (which measures it and
needs hardware's cpu_name) do not import each other.
"""

from __future__ import annotations

from dataclasses import dataclass


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
