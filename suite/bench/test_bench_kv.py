"""KV-cache append: writing new tokens into a preallocated cache moves bytes, no FLOPs."""

import numpy as np
import pytest

from attnspec.reports.timing import FLOOR_REPEATS
from attnspec.specs.cost import kv_append_cost
from attnspec.suite.bench.common import Inputs, copy_probe, measure, need

pytestmark = [pytest.mark.bench, pytest.mark.benchmark(group="kv-cache append")]

MAX_ROUNDS = 20  # the cache is allocated for every append the benchmark can make
SMALL_WHY = "{kib:.0f} KiB written as B·Hkv strided pieces: per-op cost, not bandwidth"


def test_kv_append(bench, impl, dtype, case):
    """Append `new` tokens after P cached ones; afterwards the whole cache holds every append."""
    need(impl, dtype, "kv_cache")
    B, Hkv, D, P, new = (case[k] for k in ("B", "Hkv", "D", "P", "new"))
    inputs = Inputs(impl, dtype)
    max_len = P + (MAX_ROUNDS + 3) * new
    cache = impl.kv_cache(B, Hkv, D, max_len, dtype)
    written = []

    def fresh():
        k, v = inputs.normal(B, Hkv, new, D), inputs.normal(B, Hkv, new, D)  # (B, Hkv, new, D)
        written.append((k, v))
        return k, v

    cache.append(*fresh_prefix(inputs, written, B, Hkv, P, D))
    tiny = impl.kv_cache(1, 1, 1, FLOOR_REPEATS + 1, dtype)  # one-element appends: the floor
    nbytes = 2 * B * Hkv * new * D * 4  # K and V of the new tokens, float32
    large = nbytes >= 1 << 20  # bandwidth-sized: a copy probe is its limit

    def check(timed):
        keys, values = timed.result
        for i, got in enumerate((keys, values)):
            want = np.concatenate([inputs.numpy(kv[i]) for kv in written], axis=2)
            if not np.array_equal(np.asarray(impl.to_numpy(got), np.float64), want):
                raise AssertionError(
                    f"after {len(written) - 1} appends the cache's {'kv'[i]} differs from "
                    f"everything appended (shape {want.shape})"
                )

    measure(
        bench,
        impl,
        dtype,
        lambda k, v: cache.append(k, v),
        fresh,
        group="kv-cache append",
        variant=f"append {new}",
        case=f"B={B} Hkv={Hkv} D={D} after {P}",
        shape=case,
        cost=lambda E: kv_append_cost(1, B, Hkv, D, new, E),
        clause="KV-APPEND-ONLY",
        check=check,
        max_rounds=MAX_ROUNDS,
        floor_args=inputs.minimal(2),
        floor_fn=lambda k, v: tiny.append(k, v),
        probe=(lambda: copy_probe(bench, impl, nbytes, "the append")) if large else None,
        extras=None if large else {"why": SMALL_WHY.format(kib=nbytes / 2**10)},
    )


def fresh_prefix(inputs, written, B, Hkv, P, D):
    """The P prefilled tokens, remembered for the final comparison."""
    k, v = inputs.normal(B, Hkv, P, D), inputs.normal(B, Hkv, P, D)  # (B, Hkv, P, D)
    written.append((k, v))
    return k, v
