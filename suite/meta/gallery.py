"""A gallery of misbehaving implementations: each breaks the contract in one named way.

The meta-tests plug them in through --impl in a real pytest run and check that each one gets a
FAIL naming its misbehaviour while the run goes on. Each provides only `attention`.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import numpy as np

import attnspec.implementations.numpy_impl as base


def gallery(name: str, attention: Any) -> SimpleNamespace:
    return SimpleNamespace(
        name=f"gallery-{name}",
        asarray=base.asarray,
        to_numpy=base.to_numpy,
        dtypes=base.dtypes,
        attention=attention,
    )


def _raises(q, k, v, *, causal, scale=None):
    raise RuntimeError("kernel launch failed")


def _nan(q, k, v, *, causal, scale=None):
    out = base.attention(q, k, v, causal=causal, scale=scale)
    out.flat[0] = np.nan
    return out


def _wrong_shape(q, k, v, *, causal, scale=None):
    return base.attention(q, k, v, causal=causal, scale=scale).swapaxes(1, 2)


def _wrong_dtype(q, k, v, *, causal, scale=None):
    return base.attention(q, k, v, causal=causal, scale=scale).astype(np.float64)


def _non_array(q, k, v, *, causal, scale=None):
    return base.attention(q, k, v, causal=causal, scale=scale).tolist()


def _mutates(q, k, v, *, causal, scale=None):
    out = base.attention(q, k, v, causal=causal, scale=scale)
    q *= 0.5  # scales the caller's queries in place
    return out


_calls = [0]


def _hidden_state(q, k, v, *, causal, scale=None):
    _calls[0] += 1  # a counter that leaks into the result
    return base.attention(q, k, v, causal=causal, scale=scale) * (1 + 1e-3 * _calls[0])


_buffer: dict[tuple[int, ...], np.ndarray] = {}


def _same_buffer(q, k, v, *, causal, scale=None):
    out = base.attention(q, k, v, causal=causal, scale=scale)
    buf = _buffer.setdefault(out.shape, np.empty_like(out))
    buf[...] = out  # every call returns the same array object
    return buf


def _hangs(q, k, v, *, causal, scale=None):
    time.sleep(3600)


def _spins(q, k, v, *, causal, scale=None):
    while True:
        pass


def _wrong_device_impl() -> SimpleNamespace:
    """torch on the CPU, but its result lands on the `meta` device (the stand-in for a GPU)."""
    import attnspec.implementations.torch_impl as torch_impl

    cpu = torch_impl.TorchImplementation("cpu")

    def attention(q, k, v, *, causal, scale=None):
        return cpu.attention(q, k, v, causal=causal, scale=scale).to("meta")

    return SimpleNamespace(
        name="gallery-wrong-device",
        asarray=cpu.asarray,
        to_numpy=cpu.to_numpy,
        dtypes=cpu.dtypes,
        attention=attention,
    )


RAISES = gallery("raises", _raises)
NAN = gallery("nan", _nan)
WRONG_SHAPE = gallery("wrong-shape", _wrong_shape)
WRONG_DTYPE = gallery("wrong-dtype", _wrong_dtype)
NON_ARRAY = gallery("non-array", _non_array)
MUTATES = gallery("mutates-input", _mutates)
HIDDEN_STATE = gallery("hidden-state", _hidden_state)
SAME_BUFFER = gallery("same-buffer", _same_buffer)
HANGS = gallery("hangs", _hangs)
SPINS = gallery("spins", _spins)
try:
    WRONG_DEVICE = _wrong_device_impl()
except ImportError:  # torch is optional; without it there is no second device to land on
    pass

# attribute name -> the words its FAIL message must contain
EXPECTED: dict[str, str] = {
    "RAISES": "raised RuntimeError: kernel launch failed",
    "NAN": "non-finite output",
    "WRONG_SHAPE": "returned shape",
    "WRONG_DTYPE": "returned dtype float64, expected float32",
    "NON_ARRAY": "returned list, which to_numpy cannot convert",
    "MUTATES": "mutated its input #0",
    "HIDDEN_STATE": "hidden state",
    "SAME_BUFFER": "returns the same buffer for different inputs",
    "HANGS": "hang: no result after",
    "SPINS": "hang: no result after",
    "WRONG_DEVICE": "returned a result on device meta for inputs on cpu",
}
