"""torch's scaled_dot_product_attention, one implementation per backend: sdpa-math,
sdpa-flash, sdpa-efficient and sdpa-cudnn.

Each forces its backend with torch.nn.attention.sdpa_kernel, so the suite tests that kernel
(FlashAttention's CPU kernel inside torch is `sdpa-flash` on a CPU) rather than whichever one
torch would pick. GQA goes through `enable_gqa`; causal masks are bottom-right aligned through
torch.nn.attention.bias.causal_lower_right (SDPA's `is_causal` is top-left aligned). Where a
backend cannot run a dtype on the device at all, its clauses are skipped with torch's reason
(see attnspec.implementations.library_base); where it refuses one shape, the clause fails with
torch's error: that is a limit of the kernel under test.

The flash and cuDNN kernels need equal head dims for q, k and v; a call with Dv != D pads the
smaller side with zeros (zero columns add nothing to q·k and give zero output columns, which
are cut off), as users of those kernels do. `tiled_attention` is the same call: the kernel
tiles with its own block sizes, so block_q and block_k are accepted and unused, and the
log-sum-exp is not returned (FLASH-LSE is skipped): SDPA has no lse output, so the "lse"
option is not declared (LSE-REF, MERGE-EQ-UNION and CASCADE-EQ-DENSE skip).

Queries that see no key (a causal_lower_right mask with Tq > Tk, no keys at all): measured on
torch 2.13's CPU math and flash kernels, SDPA returns 0 for such rows (not NaN), so sdpa-math
and sdpa-flash declare "empty_rows"; sdpa-efficient and sdpa-cudnn (CUDA kernels) were not
measured and do not declare it (ATTN-EMPTY-ROWS skips for them).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

from attnspec.implementations.library_base import TorchLibrary
from attnspec.implementations.validate import check_attention_shapes, check_causal_lengths

BACKENDS: dict[str, SDPBackend] = {
    "math": SDPBackend.MATH,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
}
EQUAL_HEAD_DIMS = ("flash", "cudnn")  # kernels that need q, k and v to share the head dim


class SdpaImplementation(TorchLibrary):
    """scaled_dot_product_attention forced onto one backend."""

    backend = "math"
    dtypes = ("float32", "float16", "bfloat16", "float64")
    options: frozenset[str] = frozenset()  # "empty_rows" where measured to give 0 (see above)

    def __init__(self, device: str | None = None) -> None:
        super().__init__(device)
        self.name = f"sdpa-{self.backend}"
        self.library = f"torch's {BACKENDS[self.backend].name} backend"

    def sdpa(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        scale: float,
    ) -> torch.Tensor:
        """The backend's kernel on q (B, Hq, Tq, D), k (B, Hkv, Tk, D), v (B, Hkv, Tk, Dv)."""
        D, Dv = q.shape[-1], v.shape[-1]
        if self.backend in EQUAL_HEAD_DIMS and D != Dv:
            width = max(D, Dv)
            q, k, v = (F.pad(x, (0, width - x.shape[-1])) for x in (q, k, v))  # (.., width)
        with sdpa_kernel(BACKENDS[self.backend]):
            o = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
            )  # (B, Hq, Tq, width)
        return o[..., :Dv]  # (B, Hq, Tq, Dv)

    def probe(self, dtype: torch.dtype) -> Callable[[], object]:
        def call() -> object:
            q = torch.zeros(1, 2, 4, 64, dtype=dtype, device=self.device)  # (B, Hq, Tq, D)
            kv = torch.zeros(1, 1, 8, 64, dtype=dtype, device=self.device)  # (B, Hkv, Tk, D)
            return self.sdpa(q, kv, kv, causal_lower_right(4, 8), 0.125)

        return call

    def attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        causal: bool,
        scale: float | None = None,
    ) -> torch.Tensor:
        """softmax(scale q k^T + bottom-right mask) v through the forced backend."""
        _, _, Tq, D, _, Tk, _ = check_attention_shapes(q, k, v, causal=causal)
        if "empty_rows" not in self.options:
            check_causal_lengths(Tq, Tk, causal=causal)
        self.require(q.dtype)
        mask = causal_lower_right(Tq, Tk) if causal else None
        return self.sdpa(q, k, v, mask, 1.0 / math.sqrt(D) if scale is None else float(scale))

    def tiled_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        causal: bool,
        scale: float | None = None,
        block_q: int,
        block_k: int,
    ) -> torch.Tensor:
        """`attention`: the fused kernels tile with their own block sizes."""
        return self.attention(q, k, v, causal=causal, scale=scale)


class SdpaMath(SdpaImplementation):
    backend = "math"
    options = frozenset({"empty_rows"})


class SdpaFlash(SdpaImplementation):
    backend = "flash"
    options = frozenset({"empty_rows"})


class SdpaEfficient(SdpaImplementation):
    backend = "efficient"


class SdpaCudnn(SdpaImplementation):
    backend = "cudnn"


math_impl = SdpaMath()
flash = SdpaFlash()
efficient = SdpaEfficient()
cudnn = SdpaCudnn()
