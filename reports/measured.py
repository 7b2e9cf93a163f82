"""A device's measured roof, as attnspec.reports.calibrate measures it and attnspec.reports.hardware shows it.

Its own module so that hardware (which only shows it) and calibrate (which measures it and
needs hardware's cpu_name) do not import each other.
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass, field

RAISE_MARGIN = 0.05  # a sample raises a figure only when this much faster: smaller moves are
# the figures' own jitter (a GEMM varies ~3% from call to call on the CI VM), and a roof that
# moved with them would move the ridge, and the verdicts of rows beside it, from run to run


@dataclass(frozen=True)
class Measured:
    """One device's measured roof: every method's figure and the ones the roof uses.

    Rates are per second; bytes are read + written. ``streams`` holds copy, triad and read
    bandwidths, ``rejected`` why a stream was not trusted, ``gemms`` every GEMM tried
    ("torch n=2048": FLOP/s). ``bandwidth`` and ``gemm_flops`` are the roof; ``cache_bandwidth``
    is None when the cache copy was rejected (``rejected["cache"]`` says why). ``ceiling`` holds
    the two best of the samples benchmark sessions took beside their benchmarks
    (attnspec.reports.ceiling), per method: "session gemv" bandwidths, "session numpy n=1024" GEMM
    rates; ``ceiling_samples`` counts them, ``ceiling_at`` is when one last rose. A method's
    ceiling figure is its second best (reached twice); one that beats ``bandwidth`` or
    ``gemm_flops`` by more than RAISE_MARGIN replaces it (``with_samples``), and the method
    then names the sample ("session gemv"). ``cache_bytes`` bounds the cache the device's
    tenant holds (on a CPU the smallest working set that re-read at main-memory speed,
    attnspec.reports.cache_probe; a GPU's L2), ``cache_held`` is the largest working set the
    probe saw kept, ``cache_nominal`` the size reported and ``cache_rates`` the probe's re-read
    rates by size (empty when the bound was given, not probed).
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
    ceiling: dict[str, list[float]] = field(default_factory=dict)
    ceiling_samples: int = 0
    ceiling_at: str = ""
    cache_nominal: int = 0  # the size the OS or driver reports; 0: no bound was measured
    cache_held: int = 0  # attnspec.reports.cache_probe: the view before the bound
    cache_rates: dict[str, float] = field(default_factory=dict)  # attnspec.reports.cache_probe

    def source(self, figure: str) -> tuple[float, str]:
        """(rate, where it comes from) of ``figure`` ("bandwidth" or "gemm_flops"): the method,
        how many it was the best of, the device key and when."""
        if figure == "gemm_flops":
            rate, method = self.gemm_flops, self.gemm_method
            how = f"{self.gemm_dtype} GEMM, best of {len(self.gemms)}: {method}"
        else:
            rate, method = self.bandwidth, self.bandwidth_method
            how = f"best of {len(self.streams)} streams: {method}"
        when = self.measured_at
        if method in self.ceiling:
            how = f"ceiling: {method}, reached twice in {self.ceiling_samples} samples"
            when = self.ceiling_at
        return rate, f"measured ({how}, {self.device_key}, {when})"

    def with_samples(self, samples: dict[str, list[float]], count: int, when: str) -> Measured:
        """This roof with a session's two best samples per method merged into ``ceiling`` and
        its bandwidth and peak raised to a sample that beat them by more than RAISE_MARGIN
        (``when`` dates a rise)."""
        ceiling, at = dict(self.ceiling), self.ceiling_at
        for method, top in samples.items():
            both = top_two(*ceiling.get(method, []), *top)
            if both != ceiling.get(method):
                ceiling[method], at = both, when
        raised: dict[str, object] = {}
        for unit, figure, method in (
            ("B/s", "bandwidth", "bandwidth_method"),
            ("FLOP/s", "gemm_flops", "gemm_method"),
        ):
            found = {
                k: rate
                for k, top in ceiling.items()
                if ceiling_unit(k) == unit and (rate := confirmed(top)) is not None
            }
            best = max(found, key=lambda k: found[k], default=None)
            if best is not None and found[best] > (1 + RAISE_MARGIN) * getattr(self, figure):
                raised[figure], raised[method] = found[best], best
        return dataclasses.replace(
            self,
            ceiling=ceiling,
            ceiling_samples=self.ceiling_samples + count,
            ceiling_at=at,
            **raised,  # type: ignore[arg-type]
        )

    @property
    def copy_bandwidth(self) -> float:
        return self.streams["copy"]

    @property
    def triad_bandwidth(self) -> float:
        return self.streams["triad"]

    @property
    def read_bandwidth(self) -> float:
        return self.streams["read"]


def ceiling_unit(method: str) -> str:
    """What a ceiling entry measures: "FLOP/s" for a GEMM sample, "B/s" for a stream."""
    return "FLOP/s" if "n=" in method else "B/s"


def top_two(*rates: float) -> list[float]:
    """The two greatest rates, greatest first (a method's ceiling record)."""
    return sorted(rates, reverse=True)[:2]


def confirmed(top: list[float]) -> float | None:
    """A method's ceiling figure: its second-best sample (reached twice); None with one."""
    return top[1] if len(top) > 1 else None


def utc_now() -> str:
    """The time now, as the calibration file records it (UTC, to the second)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
