"""The shapes each benchmark sweeps, per --bench-size.

`small` takes seconds (CI), `default` a few minutes on a 2-core CPU, `large` is for GPUs
(a `default` run on a GPU uses it). The matmul keeps the textbook shape D=4096, F=11008
in `default` and `large`, so its verdicts can be checked against the hand derivation.
"""

from __future__ import annotations

from typing import Any

Case = dict[str, Any]

DECODE = {"Hq": 8, "Hkv": 8, "D": 128}  # MHA: the textbook's ~1 FLOP/byte in 2-byte elements
LONG_DECODE = {"B": 1, "Hq": 32, "Hkv": 8, "D": 128}  # Llama-style GQA, 4 query heads per kv head


def _cases(base: Case, *variations: Case) -> list[Case]:
    return [{**base, **v} for v in variations]


def _grid(
    *,
    matmul: Case,
    batches: tuple[int, ...],
    decode: list[tuple[int, int]],
    long_T: int,
    prefill: Case,
    prefill_T: tuple[int, ...],
    tiled: Case,
    tiled_T: tuple[int, ...],
    linear: Case,
    append: Case,
    appends: tuple[int, ...],
    model: Case,
    generation: list[tuple[int, int, int]],
    cache_cmp: list[tuple[int, int, int]],
) -> dict[str, list[Case]]:
    tiled_cases = _cases(tiled, *({"T": t} for t in tiled_T))
    generation_cases = [{"B": b, "P": p, "N": n, "model": model} for b, p, n in generation]
    cache_cases = [{"B": b, "P": p, "N": n, "model": model} for b, p, n in cache_cmp]
    return {
        "matmul": _cases(matmul, *({"B": b} for b in batches)),
        "decode_attention": _cases(DECODE, *({"B": b, "T": t} for b, t in decode)),
        "decode_long_context": [{**LONG_DECODE, "T": long_T}],
        "prefill_attention": _cases(prefill, *({"T": t} for t in prefill_T)),
        "tiled_attention": tiled_cases,
        "sdpa_baseline": tiled_cases,
        "linear_recurrent": [linear],
        "linear_chunked": [linear],
        "linear_step": [linear],
        "kv_append": _cases(append, *({"new": n} for n in appends)),
        "generation": generation_cases,
        "cached_generation": cache_cases,
        "full_recompute": cache_cases,
    }


SMALL_MODEL = {
    "vocab": 256,
    "d_model": 64,
    "layers": 2,
    "n_heads": 4,
    "n_kv_heads": 2,
    "head_dim": 16,
    "d_ff": 176,
}
DEFAULT_MODEL = {
    "vocab": 1024,
    "d_model": 256,
    "layers": 4,
    "n_heads": 8,
    "n_kv_heads": 4,
    "head_dim": 32,
    "d_ff": 704,
}
LARGE_MODEL = {
    "vocab": 8192,
    "d_model": 512,
    "layers": 4,
    "n_heads": 8,
    "n_kv_heads": 2,
    "head_dim": 64,
    "d_ff": 1408,
}

GRIDS: dict[str, dict[str, list[Case]]] = {
    "small": _grid(
        matmul={"D": 512, "F": 1376},
        batches=(1, 16, 64),
        decode=[(1, 256), (1, 1024), (4, 256)],
        long_T=1024,
        prefill={"B": 1, "Hq": 8, "Hkv": 8, "D": 64},
        prefill_T=(64, 256),
        tiled={"B": 1, "Hq": 8, "Hkv": 8, "D": 64, "block": 64},
        tiled_T=(256,),
        linear={"B": 1, "H": 8, "D": 64, "T": 256, "chunk": 64},
        append={"B": 2, "Hkv": 8, "D": 128, "P": 64},
        appends=(1, 64),
        model=SMALL_MODEL,
        generation=[(1, 16, 4), (4, 16, 4)],
        cache_cmp=[(1, 16, 4)],
    ),
    "default": _grid(
        matmul={"D": 4096, "F": 11008},
        batches=(1, 16, 64, 256, 512),
        decode=[(1, 1024), (1, 4096), (1, 16384), (4, 1024), (16, 1024)],
        long_T=16384,
        prefill={"B": 1, "Hq": 8, "Hkv": 8, "D": 64},
        prefill_T=(128, 512, 2048),
        tiled={"B": 1, "Hq": 8, "Hkv": 8, "D": 64, "block": 128},
        tiled_T=(512, 2048),
        linear={"B": 1, "H": 8, "D": 64, "T": 4096, "chunk": 64},
        append={"B": 4, "Hkv": 8, "D": 128, "P": 1024},
        appends=(1, 256),
        model=DEFAULT_MODEL,
        generation=[(1, 128, 16), (4, 128, 16), (16, 128, 16), (1, 1024, 16)],
        cache_cmp=[(1, 128, 16)],
    ),
    "large": _grid(
        matmul={"D": 4096, "F": 11008},
        batches=(1, 16, 64, 256, 512),
        decode=[(1, 4096), (1, 16384), (1, 65536), (8, 4096), (32, 4096), (64, 4096)],
        long_T=16384,
        prefill={"B": 1, "Hq": 32, "Hkv": 8, "D": 128},
        prefill_T=(512, 2048, 4096),
        tiled={"B": 1, "Hq": 8, "Hkv": 8, "D": 64, "block": 128},
        tiled_T=(2048, 8192),
        linear={"B": 1, "H": 8, "D": 64, "T": 4096, "chunk": 64},
        append={"B": 8, "Hkv": 8, "D": 128, "P": 4096},
        appends=(1, 1024),
        model=LARGE_MODEL,
        generation=[(1, 512, 32), (8, 512, 32), (32, 512, 32), (1, 2048, 32), (1, 4096, 32)],
        cache_cmp=[(1, 512, 32)],
    ),
}


def case_id(case: Case, varying: set[str]) -> str:
    """`B=16-T=1024`: the parameters that vary within the grid (all when none vary)."""
    keys = [k for k in case if k in varying and k != "model"] or [k for k in case if k != "model"]
    return "-".join(f"{k}={case[k]}" for k in keys)


def cases(size: str, name: str) -> tuple[list[Case], list[str]]:
    """The cases of benchmark `name` at `size`, and their test ids."""
    grid = GRIDS[size][name]
    varying = {k for k in grid[0] if any(c.get(k) != grid[0][k] for c in grid)}
    return grid, [case_id(c, varying) for c in grid]


# Ragged decode (suite/bench/test_bench_ragged.py): B sequences, most of them short (lengths
# spread geometrically from `short` to 16x it) and the `long` ones; added after the grids above.
for _size, _ragged in {
    "small": {"Hq": 8, "Hkv": 2, "D": 128, "B": 16, "short": 8, "long": (512, 1024)},
    "default": {"Hq": 8, "Hkv": 2, "D": 128, "B": 16, "short": 40, "long": (8192, 9000, 12288)},
    "large": {"Hq": 32, "Hkv": 8, "D": 128, "B": 32, "short": 64, "long": (8192, 16384, 32768)},
}.items():
    GRIDS[_size]["ragged_decode"] = [_ragged]

# Decode-step latency (suite/bench/test_bench_latency.py): the generation model's decode step at
# a few batch sizes B per context T, a line per T for the latency-vs-throughput plot. One prefill
# per case (untimed), then ROUNDS timed single-token steps; added after the grids above. The
# prefill sets the cost (numpy materialises B·H·T² scores): short contexts with large batches put
# as many cache bytes beside the weights for far less of it. Each case costs about half a second
# of fixed benchmark work (a cache flush per round, a ceiling sample), so the default grid keeps
# three: B=1 -> 8 at T=64, and T=64 -> 256 at B=8.
for _size, (_model, _points) in {
    "small": (SMALL_MODEL, [(1, 16), (4, 16), (4, 64)]),
    "default": (DEFAULT_MODEL, [(1, 64), (8, 64), (8, 256)]),
    "large": (LARGE_MODEL, [(1, 512), (16, 512), (64, 512), (4, 2048)]),
}.items():
    GRIDS[_size]["decode_step"] = [{"B": b, "T": t, "model": _model} for b, t in _points]

# Cascade decode (suite/bench/test_bench_cascade.py): B requests sharing a P-token prompt, each
# with `suffix` own tokens; `large` is the hand-derived batch of attnspec.specs.cost_cascade (Llama-3-8B).
for _size, _cascade in {
    "small": {"Hq": 8, "Hkv": 2, "D": 64, "B": 8, "P": 512, "suffix": 16},
    "default": {"Hq": 8, "Hkv": 2, "D": 64, "B": 16, "P": 1024, "suffix": 32},
    "large": {"Hq": 32, "Hkv": 8, "D": 128, "B": 32, "P": 4096, "suffix": 128},
}.items():
    GRIDS[_size]["cascade_decode"] = [_cascade]
