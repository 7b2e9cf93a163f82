"""Benchmarks (pytest-benchmark): skipped in a plain `pytest suite`, run by `pytest --benchmark-only`."""
