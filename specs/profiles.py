"""Hypothesis settings for the run tiers, and the one the mutant meta-tests use.

smoke: one example per clause and no shrinking, for a seconds-long sanity check.
default: the CI tier, derandomized so a run is reproducible and the same on every machine.
thorough: many examples with fresh random seeds, for hunting rare bugs before a release.
"""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

TIERS: dict[str, dict[str, object]] = {
    "smoke": {
        "max_examples": 1,
        "derandomize": True,
        "database": None,
        "phases": [Phase.explicit, Phase.generate],  # no shrinking: a verdict in seconds
    },
    "default": {"max_examples": 20, "derandomize": True, "database": None},
    "thorough": {"max_examples": 250, "derandomize": False},
}
COMMON: dict[str, object] = {
    "deadline": None,
    "print_blob": True,
    "report_multiple_bugs": False,  # one clear failure per clause, not an exception group
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
TIER_ENV = "ATTNSPEC_TIER"

# Mutant meta-tests: enough examples to meet each bug, no shrinking (only the verdict matters).
KILL = settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def register() -> None:
    """Register one Hypothesis profile per tier, named attnspec-<tier>."""
    for tier, values in TIERS.items():
        settings.register_profile(f"attnspec-{tier}", **COMMON, **values)  # type: ignore[arg-type]
