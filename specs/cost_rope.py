"""Analytic cost of rotary position embedding: an elementwise op, so pure bandwidth.

Conventions as in attnspec.specs.cost, with one exception: rope has no matmul, so the FLOPs counted
are the rotation's own (per rotated element, out_a = x_a·cos − x_b·sin: two multiplies and an
add), 3·T·H·r. The phase position × f_i and its cos/sin are per (token, pair), shared by the
H heads, and not counted. Bytes: x read and the result written, E·T·H·D each (the pass-through
dims too: the result is a new tensor), plus the positions (T indices of `index_bytes`) and,
for a kernel that reads a precomputed cos/sin cache (vLLM's cos_sin_cache), the T·r values it
gathers at `cache_bytes` each. Intensity 3r / (2·E·D) FLOP/byte at most: 0.75 for a whole
bf16 head, far below any ridge.

Source: the RoPE rotation, Su et al. 2021 (RoFormer), eq. 34; vLLM's
`rotary_embedding(positions, query, key, head_size, cos_sin_cache, is_neox)` for the layout.
"""

from __future__ import annotations

from attnspec.specs.cost import Cost, _element_size, _positive_int

FLOPS_PER_ROTATED = 3  # x_a·cos − x_b·sin: two multiplies and an add


def rope_cost(
    T: int,
    H: int,
    D: int,
    E: int | float,
    *,
    rotary_dim: int | None = None,
    index_bytes: int = 8,
    cache_bytes: int | float = 0,
) -> Cost:
    """rope(x (T, H, D), positions (T,)): 3·T·H·r FLOPs and 2·E·T·H·D + index_bytes·T
    (+ cache_bytes·T·r) bytes.

    Llama-3-8B rotates q (32 heads) and k (8 heads) of head dim 128: H = 40, and a prefill
    chunk of T = 2048 bf16 tokens costs 3·2048·40·128 = 31,457,280 FLOPs and
    2·2·2048·40·128 + 8·2048 = 41,959,424 bytes (intensity 0.7497).
    """
    T, H, D = _positive_int("T", T), _positive_int("H", H), _positive_int("D", D)
    E = _element_size("E", E)
    r = D if rotary_dim is None else _positive_int("rotary_dim", rotary_dim)
    if r > D or r % 2:
        raise ValueError(f"rotary_dim must be even and at most D={D}, got {rotary_dim!r}")
    index_bytes = _positive_int("index_bytes", index_bytes)
    if not (cache_bytes == 0 or _element_size("cache_bytes", cache_bytes)):
        raise ValueError(f"cache_bytes must be >= 0, got {cache_bytes!r}")
    flops = FLOPS_PER_ROTATED * T * H * r
    return Cost(flops, 2 * E * T * H * D + index_bytes * T + cache_bytes * T * r)
