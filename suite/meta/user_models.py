"""Small user implementations, plugged in by path in the meta-tests as a user would plug theirs.

`parallel_only`: causal linear attention with only the parallel form (no recurrent or chunked
form). `own_model`: a decoder brought with its own weights (`model()` + `model_config`, the
README's "Bring your own model"), so only the self-consistency clauses can run on it.
Both wrap the shipped numpy implementation.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np

import attnspec.implementations.numpy_impl as base
from attnspec.implementations.numpy_impl.decoder import NumpyDecoder, decoder
from attnspec.specs.decoder_weights import DecoderConfig, make_weights

CONFIG = DecoderConfig(
    vocab=40,
    d_model=16,
    layers=2,
    n_heads=4,
    n_kv_heads=2,
    head_dim=4,
    d_ff=24,
    tied_embeddings=False,
    max_len=12,
)
WEIGHT_SEED = 7

parallel_only = SimpleNamespace(
    name="parallel-only",
    asarray=base.asarray,
    to_numpy=base.to_numpy,
    dtypes=("float32",),
    linear_attention=base.linear_attention,
)


@functools.cache
def build_model() -> NumpyDecoder:
    """The numpy decoder on fixed float32 weights: to the suite, a model of unknown make."""
    weights = make_weights(CONFIG, WEIGHT_SEED)
    return decoder(CONFIG, {k: w.astype(np.float32) for k, w in weights.items()})


own_model = SimpleNamespace(
    name="own-model",
    asarray=base.asarray,
    to_numpy=base.to_numpy,
    dtypes=("float32",),
    model=build_model,
    model_config={
        "vocab": CONFIG.vocab,
        "max_len": CONFIG.max_len,
        "d_model": CONFIG.d_model,
        "d_ff": CONFIG.d_ff,
    },
)
