"""Serving-shaped attention in torch: packed varlen batches and a paged KV cache (vLLM layout).

Both ops run one split-KV pass (flash-decoding): every sequence's keys are cut into chunks of
about CHUNK keys (for the paged cache, runs of whole blocks read through the block table), all
chunks of all sequences are scored in one batched matmul against their own sequence's queries,
and the per-chunk softmax partials (max, sum, weighted values) are merged per sequence with
scatter_reduce / index_add. No Python loop runs per token or per sequence, and no sequence is
padded beyond its last chunk, so a long-tailed batch costs what its ragged lengths cost.
Queries are padded to the longest query run in the batch: free for decode (one token each),
and the price of mixing a long prefill chunk with decodes in one call.

Keys a query may not see (other sequences, slots past seq_len, blocks gathered only to fill a
chunk) get -inf logits and zeroed values, so NaN or Inf garbage there can't leak through 0*NaN.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from attnspec.implementations.numpy_impl.masking import check_options
from attnspec.implementations.paged_base import (
    check_packed,
    check_paged,
    check_pool,
    check_slots,
    check_varlen,
)
from attnspec.implementations.quant_base import check_scales
from attnspec.implementations.torch_impl import quant
from attnspec.implementations.torch_impl.dtypes import TORCH_DTYPES
from attnspec.implementations.torch_impl.masking import cap, visible

CHUNK = 1024  # the most keys per split-KV chunk; fewer when sequences are short


def chunk_size(lens: torch.Tensor) -> int:
    """Keys per chunk: the mean length rounded up to a power of two, within [64, CHUNK]: long
    chunks make efficient matmuls, short ones waste little on short sequences."""
    mean = float(lens.float().mean())
    return int(min(CHUNK, max(64, 2 ** math.ceil(math.log2(max(mean, 1.0))))))


def host(x: torch.Tensor) -> np.ndarray:
    """A small index tensor (offsets, lengths, block table) on the host, as int64."""
    return x.detach().to("cpu", torch.int64).numpy()


def split_kv_attention(
    q: torch.Tensor,
    qpos: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    chunk_seq: torch.Tensor,
    kpos: torch.Tensor,
    valid: torch.Tensor,
    *,
    causal: bool,
    scale: float,
    window: int | None,
    softcap: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded queries q (B, Tq, Hq, D) at positions qpos (B, Tq) over key chunks keys
    (N, C, Hkv, D), values (N, C, Hkv, Dv) (gathered, contiguous copies: values are zeroed in
    place where not `valid`) of sequences chunk_seq (N,) at positions kpos (N, C), valid (N, C).
    Returns the output (B, Tq, Hq, Dv) and the log-sum-exp (B, Tq, Hq); a query that sees no key
    gets 0 and -inf.

    The matmuls run once per kv head on strided views of the gathered chunks (a loop over
    Hkv <= 8 heads, never over tokens or sequences): batching the heads would need a transposed
    copy of the whole gathered cache.
    """
    B, Tq, Hq, D = q.shape
    N, C, Hkv, Dv = values.shape
    G = Hq // Hkv
    qt = q[chunk_seq].view(N, Tq, Hkv, G, D).permute(2, 0, 3, 1, 4)  # (Hkv, N, G, Tq, D)
    qt = qt.reshape(Hkv, N, G * Tq, D)
    # q K^T with the strided chunk as the transposed right operand (BLAS reads it in place)
    s = torch.stack([qt[h] @ keys[:, :, h].transpose(1, 2) for h in range(Hkv)])
    s = cap(s.mul_(scale), softcap)  # (Hkv, N, G*Tq, C)
    seen = visible(qpos[chunk_seq], kpos, causal=causal, window=window)  # (N, Tq, C) or None
    seen = valid[:, None, :] if seen is None else seen & valid[:, None, :]  # (N, Tq, C)
    hidden = ~seen[:, None].expand(N, G, Tq, C).reshape(N, G * Tq, C)
    s = s.masked_fill_(hidden, -math.inf)  # (Hkv, N, G*Tq, C)
    m = s.amax(dim=3)  # (Hkv, N, G*Tq)
    p = s.sub_(m.masked_fill(m == -math.inf, 0.0)[..., None]).exp_()  # (Hkv, N, G*Tq, C)
    unused = (~valid).flatten().nonzero().squeeze(1)  # slots past a sequence's end
    values.view(N * C, Hkv, Dv).index_fill_(0, unused, 0.0)  # else 0 x NaN garbage poisons p @ V
    o = torch.stack([p[h] @ values[:, :, h] for h in range(Hkv)])
    top = torch.full((Hkv, B, G * Tq), -math.inf, dtype=m.dtype, device=m.device)
    where = chunk_seq.view(1, N, 1).expand_as(m)  # (Hkv, N, G*Tq)
    top.scatter_reduce_(1, where, m, "amax")  # (Hkv, B, G*Tq): each sequence's max logit
    alpha = (m - top.masked_fill(top == -math.inf, 0.0)[:, chunk_seq]).exp_()  # (Hkv, N, G*Tq)
    l = torch.zeros_like(top).index_add_(1, chunk_seq, alpha * p.sum(dim=3))  # (Hkv, B, G*Tq)
    acc = torch.zeros((Hkv, B, G * Tq, Dv), dtype=o.dtype, device=o.device)
    acc.index_add_(1, chunk_seq, o.mul_(alpha[..., None]))  # (Hkv, B, G*Tq, Dv) from (Hkv, N, ..)
    lse = (top.masked_fill(top == -math.inf, 0.0) + l.log()).view(Hkv, B, G, Tq)  # log 0: -inf
    out = acc.div_(l.masked_fill(l == 0, 1.0)[..., None]).view(Hkv, B, G, Tq, Dv)
    lse = lse.permute(1, 3, 0, 2).reshape(B, Tq, Hq)  # (B, Tq, Hq)
    return out.permute(1, 3, 0, 2, 4).reshape(B, Tq, Hq, Dv), lse  # (B, Tq, Hq, Dv)


WORKSPACE: dict[tuple[str, torch.dtype], torch.Tensor] = {}  # CPU gather buffers, reused


def gather(src: torch.Tensor, rows: torch.Tensor, name: str, dtype: torch.dtype) -> torch.Tensor:
    """src[rows] (rows.numel(), *src.shape[1:]) in `dtype`. On CPU into a buffer reused from
    call to call: a fresh allocation of that size is returned to the OS after each call and
    page-faults on the next, which costs several times the copy itself."""
    if src.device.type != "cpu":
        return torch.index_select(src, 0, rows).to(dtype)
    shape = (rows.numel(), *src.shape[1:])
    size = math.prod(shape)
    buf = WORKSPACE.get((name, src.dtype))
    if buf is None or buf.numel() < size:
        buf = WORKSPACE[(name, src.dtype)] = torch.empty(size, dtype=src.dtype)
    out = torch.index_select(src, 0, rows, out=buf[:size].view(shape))
    return out.to(dtype)


def chunks(
    counts: torch.Tensor, size: int, lens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`counts` (B,) chunks of `size` keys per sequence of `lens` (B,) keys: the sequence and
    index of each chunk (N,), its key positions (N, size) and which of them exist (N, size)."""
    B = counts.shape[0]
    seq = torch.repeat_interleave(torch.arange(B, device=counts.device), counts)  # (N,)
    first = torch.cumsum(counts, 0) - counts  # (B,) index of each sequence's first chunk
    index = torch.arange(seq.shape[0], device=counts.device) - first[seq]  # (N,)
    kpos = index[:, None] * size + torch.arange(size, device=counts.device)  # (N, size)
    return seq, index, kpos, kpos < lens[seq][:, None]


def pad_queries(
    q: torch.Tensor, cu_q: torch.Tensor, q_lens: torch.Tensor, k_lens: torch.Tensor, Tq: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Packed q (total_q, Hq, D) as (B, Tq, Hq, D) in the working dtype, the queries' absolute
    positions (B, Tq) (bottom-right: the last query sits at k_len - 1), and each packed
    query's (sequence, row) for unpadding."""
    B = q_lens.shape[0]
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    seq = torch.repeat_interleave(torch.arange(B, device=q.device), q_lens)  # (total_q,)
    row = torch.arange(q.shape[0], device=q.device) - cu_q[seq]  # (total_q,)
    padded = torch.zeros((B, Tq, *q.shape[1:]), dtype=dt, device=q.device)  # (B, Tq, Hq, D)
    padded[seq, row] = q.to(dt)
    qpos = (k_lens - q_lens)[:, None] + torch.arange(Tq, device=q.device)  # (B, Tq)
    return padded, qpos, seq, row


def varlen_attention(
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
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Packed q (total_q, Hq, D), k/v (total_k, Hkv, D): each sequence attends to its own keys
    (with return_lse, also the log-sum-exp (total_q, Hq)); a query without keys gives 0."""
    _, _, D, Dv = check_packed(q, k, v)
    check_options(window, softcap)
    cu_host = host(cu_seqlens_q), host(cu_seqlens_k)
    check_varlen(*cu_host, q.shape[0], k.shape[0], causal, empty=True)
    cu_q, cu_k = cu_seqlens_q.to(q.device, torch.long), cu_seqlens_k.to(q.device, torch.long)
    q_lens, k_lens = cu_q.diff(), cu_k.diff()  # (B,)
    if q.shape[0] == 0 or k.shape[0] == 0:
        return no_keys(q, Dv, return_lse)
    padded, qpos, seq, row = pad_queries(q, cu_q, q_lens, k_lens, int(q_lens.max()))
    size = min(chunk_size(k_lens), int(k_lens.max()))
    counts = torch.where(q_lens > 0, -(-k_lens // size), 0)  # (B,) only sequences with queries
    cseq, _, kpos, valid = chunks(counts, size, k_lens)
    slots = (cu_k[cseq][:, None] + kpos).clamp_(max=k.shape[0] - 1)  # (N, C)
    dt = padded.dtype
    out, lse = split_kv_attention(
        padded,
        qpos,
        gather(k, slots.flatten(), "k", dt).view(*slots.shape, *k.shape[1:]),  # (N, C, Hkv, D)
        gather(v, slots.flatten(), "v", dt).view(*slots.shape, *v.shape[1:]),  # (N, C, Hkv, Dv)
        cseq,
        kpos,
        valid,
        causal=causal,
        scale=1.0 / math.sqrt(D) if scale is None else float(scale),
        window=window,
        softcap=softcap,
    )
    o = out[seq, row].to(q.dtype)  # (total_q, Hq, Dv)
    return (o, lse[seq, row]) if return_lse else o


def no_keys(
    q: torch.Tensor, Dv: int, return_lse: bool
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The result when no query sees a key: zeros (total_q, Hq, Dv) and lse -inf (total_q, Hq)."""
    o = torch.zeros((q.shape[0], q.shape[1], Dv), dtype=q.dtype, device=q.device)
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    lse = torch.full(q.shape[:2], -math.inf, dtype=dt, device=q.device)
    return (o, lse) if return_lse else o


class TorchPagedKVCache:
    """A pool of blocks k_pages, v_pages (num_blocks, block_size, Hkv, D) on one device."""

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        kv_heads: int,
        head_dim: int,
        dtype: str | torch.dtype,
        device: str | torch.device = "cpu",
        v_head_dim: int | None = None,
        kv_dtype: str | None = None,
        k_scale: object = None,
        v_scale: object = None,
    ) -> None:
        Dv = head_dim if v_head_dim is None else v_head_dim
        check_pool(num_blocks, block_size, kv_heads, head_dim, Dv)
        host_scales = check_scales(kv_dtype, host_scale(k_scale), host_scale(v_scale), kv_heads)
        self.kv_dtype = kv_dtype
        self.scales = (
            None
            if host_scales is None
            else tuple(  # (Hkv,) float32, k then v
                torch.from_numpy(s).to(device) for s in host_scales
            )
        )
        torch_dtype = TORCH_DTYPES[dtype] if isinstance(dtype, str) else dtype
        if kv_dtype is not None:
            torch_dtype = quant.STORAGE[kv_dtype]
        shape = (num_blocks, block_size, kv_heads, head_dim)
        self.k_pages = torch.zeros(shape, dtype=torch_dtype, device=device)  # (NB, bs, Hkv, D)
        self.v_pages = torch.zeros((*shape[:3], Dv), dtype=torch_dtype, device=device)  # (.., Dv)
        self.block_size = block_size
        self.num_blocks = num_blocks


def host_scale(scale: object) -> object:
    """A scale given as a tensor (any device) as a host array; a float or array as it is."""
    return scale.detach().cpu().numpy() if isinstance(scale, torch.Tensor) else scale


def paged_kv_write(
    cache: TorchPagedKVCache, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Write token t of k (T, Hkv, D), v (T, Hkv, Dv) to slot slot_mapping[t]
    (block*block_size + offset); slots of -1 are padding and skipped."""
    _, block_size, Hkv, D = cache.k_pages.shape
    Dv = cache.v_pages.shape[3]
    if k.ndim != 3 or tuple(k.shape[1:]) != (Hkv, D) or tuple(v.shape) != (k.shape[0], Hkv, Dv):
        raise ValueError(
            f"k, v must be (T, {Hkv}, {D}), (T, {Hkv}, {Dv}); got {tuple(k.shape)}, {tuple(v.shape)}"
        )
    check_slots(host(slot_mapping), k.shape[0], cache.num_blocks * block_size)
    slots = slot_mapping.to(k.device, torch.long)  # (T,)
    keep = slots >= 0  # (T,)
    if cache.scales is not None:  # stored: saturate(round(x / scale)), written as bytes
        k, v = (
            quant.quantize(x, str(cache.kv_dtype), s)
            for x, s in zip((k, v), cache.scales, strict=True)
        )
        k_dst, v_dst = quant.as_bytes(cache.k_pages), quant.as_bytes(cache.v_pages)
        k_dst.view(-1, Hkv, D).index_copy_(0, slots[keep], quant.as_bytes(k[keep]))
        v_dst.view(-1, Hkv, Dv).index_copy_(0, slots[keep], quant.as_bytes(v[keep]))
        return
    cache.k_pages.view(-1, Hkv, D).index_copy_(0, slots[keep], k[keep].to(cache.k_pages.dtype))
    cache.v_pages.view(-1, Hkv, Dv).index_copy_(0, slots[keep], v[keep].to(cache.v_pages.dtype))


def paged_attention(
    q: torch.Tensor,
    cache: TorchPagedKVCache,
    *,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    causal: bool = True,
    scale: float | None = None,
    window: int | None = None,
    softcap: float | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Packed queries (total_q, Hq, D) of each sequence's newest tokens over its cached keys,
    read block by block through block_table (B, max_blocks); seq_lens (B,) counts the new ones.
    With return_lse, also the log-sum-exp (total_q, Hq); a query seeing no key gives 0."""
    check_options(window, softcap)
    num_blocks, bs, Hkv, D = cache.k_pages.shape
    Hq, Dv = q.shape[1], cache.v_pages.shape[3]
    if q.ndim != 3 or q.shape[2] != D or Hq % Hkv:
        raise ValueError(
            f"q must be (total_q, Hq, {D}) with Hq a multiple of {Hkv}; got {tuple(q.shape)}"
        )
    q_lens_host = np.diff(host(cu_seqlens_q))
    lens_host = host(seq_lens)
    check_paged(q_lens_host, lens_host, host(block_table), (num_blocks, bs), empty=True)
    if q.shape[0] == 0 or not lens_host.any():
        return no_keys(q, Dv, return_lse)
    cu_q = cu_seqlens_q.to(q.device, torch.long)
    lens = seq_lens.to(q.device, torch.long)  # (B,)
    table = block_table.to(q.device, torch.long)  # (B, max_blocks)
    padded, qpos, seq, row = pad_queries(q, cu_q, cu_q.diff(), lens, int(q_lens_host.max()))
    per = max(1, chunk_size(lens) // bs)  # whole blocks per chunk
    blocks = -(-lens // bs)  # (B,) blocks each sequence fills
    counts = torch.where(cu_q.diff() > 0, -(-blocks // per), 0)  # (B,)
    cseq, index, kpos, valid = chunks(counts, per * bs, lens)
    cols = index[:, None] * per + torch.arange(per, device=q.device)  # (N, per) block columns
    used = cols < blocks[cseq][:, None]  # (N, per)
    ids = table[cseq[:, None], cols.clamp(max=table.shape[1] - 1)]  # (N, per)
    ids = torch.where(used, ids, 0)  # blocks past a sequence's last one: any block, masked
    N = ids.shape[0]
    dt = padded.dtype
    keys = gather(cache.k_pages, ids.flatten(), "k", dt).view(N, per * bs, Hkv, D)  # (N, C, Hkv, D)
    values = gather(cache.v_pages, ids.flatten(), "v", dt).view(N, per * bs, Hkv, Dv)
    if cache.scales is not None:  # code x scale of each chunk's own kv head
        keys, values = (
            quant.dequantize_(x, s) for x, s in zip((keys, values), cache.scales, strict=True)
        )
    out, lse = split_kv_attention(
        padded,
        qpos,
        keys,
        values,
        cseq,
        kpos,
        valid,
        causal=causal,
        scale=1.0 / math.sqrt(D) if scale is None else float(scale),
        window=window,
        softcap=softcap,
    )
    o = out[seq, row].to(q.dtype)  # (total_q, Hq, Dv)
    return (o, lse[seq, row]) if return_lse else o
