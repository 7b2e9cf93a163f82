"""A device's measured roof, as reports.calibrate measures it and reports.hardware shows it.

Its own module so that hardware (which only shows it) and calibrate (which measures it and
needs hardware's cpu_name) do not import each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measured:
    """One device's measured roof: every method's figure and the ones the roof uses.

    Rates are per second; bytes are read + written. ``streams`` holds copy, triad and read
    bandwidths, ``rejected`` why a stream was not trusted, ``gemms`` every GEMM tried
    ("torch n=2048": FLOP/s). ``bandwidth`` and ``gemm_flops`` are the roof; ``cache_bandwidth``
    is None when the cache copy was rejected (``rejected["cache"]`` says why).
    """

    device_key: str
    bandwidth: float
    bandwidth_method: str
    streams: dict[str, float]
    rejected: dict[str, str]
    cache_level: str
    cache_bytes: int
    cache_bandwidth: float | None
    gemm_flops: float
    gemm_method: str
    gemms: dict[str, float]
    gemm_dtype: str
    buffer_bytes: int
    threads: int | None
    repeats: int
    seconds: float
    measured_at: str

    @property
    def copy_bandwidth(self) -> float:
        return self.streams["copy"]

    @property
    def triad_bandwidth(self) -> float:
        return self.streams["triad"]

    @property
    def read_bandwidth(self) -> float:
        return self.streams["read"]
