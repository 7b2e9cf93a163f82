"""What the library-backed implementations (sdpa-*, flex, hf) share: a torch device, the array
exchange, and turning "this library cannot run here" into a skip that carries the library's
own reason.

A backend that cannot run a dtype on a device is found by a probe: one tiny call, made the
first time that dtype is used. When the probe fails, every later call raises pytest's skip
exception with the text torch gave (a BaseException: it passes through the suite's guard and
Hypothesis re-raises it, so the clause is skipped, not failed). Outside pytest it is an
ordinary exception with the same text.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from attnspec.implementations.torch_impl import TorchImplementation, default_device


class TorchLibrary:
    """Base of an implementation that runs a torch library on one device."""

    name = "torch-library"
    library = "torch"  # who refuses, in skip messages

    def __init__(self, device: str | None = None) -> None:
        self.device = torch.device(device or default_device())
        self.exchange = TorchImplementation(str(self.device))
        self.refusals: dict[
            torch.dtype, str | None
        ] = {}  # dtype -> why it cannot run; None: it can

    def on_device(self, device: str) -> Any:
        """The same implementation on another device (discovery.load calls this with --device)."""
        return type(self)(device)

    def asarray(self, x: np.ndarray, dtype: str) -> torch.Tensor:
        """A tensor copy of `x` in `dtype` ("float32", ..., or "int64") on this device."""
        return self.exchange.asarray(x, dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        """A numpy copy on the host; bfloat16 comes back as float32."""
        return self.exchange.to_numpy(x)

    def probe(self, dtype: torch.dtype) -> Callable[[], object]:
        """The tiny call that shows whether this library runs `dtype` on this device."""
        raise NotImplementedError

    def require(self, dtype: torch.dtype) -> None:
        """Skip (with the library's reason) when the probe for `dtype` fails on this device."""
        if dtype not in self.refusals:
            self.refusals[dtype] = refusal(self.probe(dtype))
        reason = self.refusals[dtype]
        if reason is not None:
            self.refuse(dtype, f"{self.library} says: {reason}")

    def refuse(self, dtype: torch.dtype, why: str) -> None:
        """Skip the clause: this library cannot run `dtype` here, for reason `why`."""
        dtype_name = str(dtype).removeprefix("torch.")
        pytest.skip(f"{self.name} cannot run {dtype_name} on {self.device}; {why}")


def refusal(call: Callable[[], object]) -> str | None:
    """None when `call()` runs; else torch's error text plus the warnings that explain it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call()
        except (RuntimeError, NotImplementedError, ValueError) as exc:
            lines = [str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__]
            lines += [str(w.message).strip() for w in caught if w.category is UserWarning]
            return " ".join(dict.fromkeys(lines))
    return None
