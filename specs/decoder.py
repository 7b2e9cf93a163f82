"""Decoder clauses: a whole tiny model generates the same logits with and without its KV cache.

Two kinds of subject run these clauses. An implementation with `decoder(config, weights)`
is built from a drawn DecoderConfig and seeded weights (attnspec.specs.decoder_weights), so its logits
can also be compared with the float64 reference (DEC-CROSS-IMPL). An implementation that
brings its own model provides `model()` (no arguments; returns a ready model) and
`model_config` (any object or mapping with `vocab` and `max_len`, optionally `tolerance`, a
normwise relative error, and `d_model`/`d_ff`, which size the default tolerance); only the
self-consistency clauses run on it. A model has `forward(tokens) -> logits`,
`prefill(tokens) -> (logits, cache)` and `decode(tokens, cache) -> (logits, cache)`;
tokens are (B, T) native int64 arrays made with `asarray(tokens, "int64")`, logits are
(B, T, vocab) in the working dtype.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from attnspec.specs.clauses import clause
from attnspec.specs.decoder_weights import DecoderConfig, make_weights
from attnspec.specs.dtypes import UNIT_ROUNDOFF, round_to
from attnspec.specs.reference.decoder import decoder_forward
from attnspec.specs.runner import NotImplementedByImpl, Target
from attnspec.specs.strategies import decoder_cases, seeds, splits
from attnspec.specs.tolerance import FACTOR, ClauseFailure, assert_close, floor, normwise_error

INDEX_DTYPE = "int64"  # the dtype asarray is asked for token ids
MAX_T = 12  # longest sequence a clause feeds a small model
LONG_DECODE_STEPS = 8  # decode steps after a long prompt (a real-share config past 512 tokens)
USER_REDUCTION = 4096  # reduction length assumed for a user model that does not give d_model
BASELINE_SAMPLES = 3  # the plain same-precision forward on the model and on 2 nudged copies
NUDGE_ULPS = 4.0  # how far (in units of roundoff) a copy's weights are moved
AVERAGED_ELEMENTS = 4096  # logits from which one baseline sample is representative
MODEL_OUTPUT_ULPS = 2.0  # the decoder's floor for storing its logits (the op floor allows 4)


@dataclass
class Subject:
    """The model under test, what it was built from, and how to name it in messages."""

    model: Any
    vocab: int
    max_len: int
    label: str
    config: DecoderConfig | None = None  # None: a model brought by the user
    weights: dict[str, np.ndarray] | None = None  # float64, rounded to the working dtype
    user_tolerance: float | None = None
    reduction: int = USER_REDUCTION


def user_info(t: Target) -> dict[str, Any]:
    """`model_config` as a dict; a missing vocab or max_len is the implementation's fault."""
    cfg = getattr(t.impl, "model_config", None)
    keys = ("vocab", "max_len", "d_model", "d_ff", "tolerance")
    if isinstance(cfg, Mapping):
        info = {k: cfg[k] for k in keys if cfg.get(k) is not None}
    else:
        info = {k: getattr(cfg, k) for k in keys if getattr(cfg, k, None) is not None}
    for key in ("vocab", "max_len"):
        if not isinstance(info.get(key), int) or info[key] < (2 if key == "vocab" else 1):
            raise ClauseFailure(
                f"model_config must give an int {key!r} (vocab >= 2, max_len >= 1), got "
                f"{info.get(key)!r}\n  in {t.where('model_config')}",
                misbehaviour="bad model_config",
            )
    return info


def subjects(t: Target, data: st.DataObject, *, own_weights: bool = False) -> list[Subject]:
    """The models to check: a small one and (in a share of examples) a realistic one built from
    drawn configs and seeds (decoder_cases), or the implementation's own `model()`."""
    if t.has("decoder"):
        configs = data.draw(decoder_cases(max_len=MAX_T, preset=t.preset), label="configs")
        return [built(t, data, config) for config in configs]
    if own_weights or not t.has("model"):
        raise NotImplementedByImpl(f"not implemented by {t.name}: decoder (or model)")
    info = user_info(t)
    n = max(int(info.get("d_model", USER_REDUCTION)), int(info.get("d_ff", 0)), info["max_len"])
    tol = float(info["tolerance"]) if "tolerance" in info else None
    takes_dtype = bool(inspect.signature(t.impl.model).parameters)  # model(dtype) or model()
    model = t.guard("model()", t.impl.model, *([t.dtype] if takes_dtype else []))
    return [Subject(model, info["vocab"], info["max_len"], "model()", None, None, tol, n)]


def built(t: Target, data: st.DataObject, config: DecoderConfig) -> Subject:
    """The implementation's decoder for `config`, from weights of a drawn seed."""
    seed = data.draw(seeds(), label="weight seed")
    drawn = make_weights(config, seed)
    weights = dict(zip(drawn, t.inputs(*drawn.values()), strict=True))
    native = {name: t.native(a) for name, a in weights.items()}
    label = f"decoder({config}, make_weights(seed={seed}))"
    model = t.guard(label, t.impl.decoder, config, native)
    n = max(config.d_model, config.q_dim, config.d_ff, config.max_len)
    return Subject(model, config.vocab, config.max_len, label, config, weights, None, n)


def draw_tokens(
    data: st.DataObject, s: Subject, B: int, T: int, label: str = "token seed"
) -> np.ndarray:
    """Token ids (B, T) uniform over the vocabulary."""
    rng = np.random.default_rng(data.draw(seeds(), label=label))
    return rng.integers(0, s.vocab, (B, T))  # (B, T)


def baseline_error(t: Target, s: Subject, tokens: np.ndarray, expected: np.ndarray) -> float:
    """The worst error of the plain same-precision forward over BASELINE_SAMPLES models: this
    one and near copies whose weights are nudged by a few units of roundoff (another model
    each, compared with its own float64 forward). One sample is luck: a few logits of a small
    model can all round the right way, where a correct computation's roundings do not. An
    output of AVERAGED_ELEMENTS logits or more averages its roundings: one sample does."""
    assert s.config is not None and s.weights is not None
    errors = []
    for i in range(BASELINE_SAMPLES if expected.size < AVERAGED_ELEMENTS else 1):
        weights, want = s.weights, expected
        if i:
            rng = np.random.default_rng(i)
            nudge = NUDGE_ULPS * UNIT_ROUNDOFF[t.dtype]
            weights = {
                name: round_to(a * (1 + nudge * rng.standard_normal(a.shape)), t.dtype)
                for name, a in s.weights.items()
            }
            want = decoder_forward(s.config, weights, tokens)  # (B, T, vocab)
        got = decoder_forward(s.config, weights, tokens, precision=t.dtype)  # (B, T, vocab)
        errors.append(normwise_error(got, want))
    finite = [e for e in errors if np.isfinite(e)]  # a half-precision baseline may overflow
    return max(finite, default=0.0)


def model_budget(t: Target, s: Subject, tokens: np.ndarray, expected: np.ndarray) -> float:
    """FACTOR x the worst sampled baseline error (`baseline_error`), over a floor of
    MODEL_OUTPUT_ULPS: with the baseline sampled, the floor only guards against a model whose
    every sample is exact. (It was the op floor x (layers + 1), 4 ulps per layer: several times
    a correct bfloat16 decoder's error, and above that of RoPE from bfloat16 positions.)"""
    base = baseline_error(t, s, tokens, expected)
    return max(floor(t.dtype, s.reduction, MODEL_OUTPUT_ULPS), FACTOR * base)


def pair_tolerance(t: Target, s: Subject, tokens: np.ndarray) -> float:
    """Normwise budget for two of the model's own logits that should agree: 2x its own budget."""
    if s.config is None or s.weights is None:
        return s.user_tolerance if s.user_tolerance is not None else 2 * floor(t.dtype, s.reduction)
    expected = decoder_forward(s.config, s.weights, tokens)
    return 2 * model_budget(t, s, tokens, expected)


def logits_of(t: Target, s: Subject, out: Any, text: str, B: int, T: int) -> np.ndarray:
    """Checked float64 logits (B, T, vocab) from a native result."""
    return t.result(out, text, expect_shape=(B, T, s.vocab))


def forward(t: Target, s: Subject, tokens: np.ndarray) -> np.ndarray:
    """model.forward(tokens): logits (B, T, vocab) as float64."""
    text = f"{s.label}.forward(tokens{tokens.shape})"
    out = t.guard(text, t.method(s.model, "forward"), t.native(tokens, INDEX_DTYPE))
    return logits_of(t, s, out, text, *tokens.shape)


def prefill(t: Target, s: Subject, tokens: np.ndarray) -> tuple[np.ndarray, Any]:
    """model.prefill(tokens): (logits as float64, native cache)."""
    text = f"{s.label}.prefill(tokens{tokens.shape})"
    fn = t.method(s.model, "prefill")
    logits, cache = t.call_pair(text, "logits, cache", fn, t.native(tokens, INDEX_DTYPE))
    return logits_of(t, s, logits, text, *tokens.shape), cache


def decode(
    t: Target, s: Subject, tokens: np.ndarray, cache: Any, at: int
) -> tuple[np.ndarray, Any]:
    """model.decode(tokens, cache) with `at` tokens cached: (logits as float64, cache)."""
    text = f"{s.label}.decode(tokens{tokens.shape}, cache) after {at} tokens"
    fn = t.method(s.model, "decode")
    logits, cache = t.call_pair(text, "logits, cache", fn, t.native(tokens, INDEX_DTYPE), cache)
    return logits_of(t, s, logits, text, *tokens.shape), cache


def run_chunks(t: Target, s: Subject, tokens: np.ndarray, chunks: list[int]) -> np.ndarray:
    """Prefill the first chunk, decode the others; all logits (B, T, vocab) concatenated."""
    logits, cache = prefill(t, s, tokens[:, : chunks[0]])
    parts, start = [logits], chunks[0]
    for size in chunks[1:]:
        logits, cache = decode(t, s, tokens[:, start : start + size], cache, start)
        parts.append(logits)
        start += size
    return np.concatenate(parts, axis=1)  # (B, T, vocab)


def batch_and_length(
    data: st.DataObject, s: Subject, *, min_B: int = 1, min_T: int = 2
) -> tuple[int, int]:
    """A batch size and a sequence length that fits the model's max_len: short, or, for a model
    built to hold hundreds of tokens, within LONG_DECODE_STEPS of its capacity."""
    if s.config is not None and s.max_len > MAX_T:
        T = data.draw(st.integers(s.max_len - LONG_DECODE_STEPS, s.max_len), label="T")
        return min_B, T
    B = data.draw(st.integers(min_B, 3), label="B")
    T = data.draw(st.integers(min(min_T, s.max_len), min(s.max_len, MAX_T)), label="T")
    return B, T


def prompt_length(data: st.DataObject, T: int, label: str, *, steps: int = 0) -> int:
    """P in 1..T-1; over a long sequence at most `steps` (default LONG_DECODE_STEPS) before T,
    so the decode steps after it are few and their positions are past 512."""
    if T > 2 * MAX_T:
        return T - data.draw(st.integers(1, steps or LONG_DECODE_STEPS), label=label)
    return data.draw(st.integers(1, max(1, T - 1)), label=label)


@clause(
    "DEC-CACHED-EQ-FULL",
    "prefilling P tokens and then decoding the rest one token at a time gives, at every "
    "position, the logits of a full forward pass over the whole sequence",
    needs=("decoder|model",),
)
def dec_cached_eq_full(t: Target, data: st.DataObject) -> None:
    for s in subjects(t, data):
        dec_cached_eq_full_case(t, data, s)


def dec_cached_eq_full_case(t: Target, data: st.DataObject, s: Subject) -> None:
    """One model of the clause."""
    B, T = batch_and_length(data, s)
    P = prompt_length(data, T, "prefill length P")
    tokens = draw_tokens(data, s, B, T)  # (B, T)
    full = forward(t, s, tokens)  # (B, T, vocab)
    steps = run_chunks(t, s, tokens, [P] + [1] * (T - P))  # (B, T, vocab)
    what = t.where(
        f"{s.label}: prefill of P={P} tokens, then {T - P} single-token decodes, vs forward "
        f"of tokens{tokens.shape}"
    )
    tol = pair_tolerance(t, s, tokens)
    assert_close(steps, full, dtype=t.dtype, n=s.reduction, tol=tol, what=what)


@clause(
    "DEC-CHUNKED-PREFILL",
    "prefilling the first chunk and decoding the remaining chunks of any sizes (several tokens "
    "per call) gives the logits of a full forward pass",
    needs=("decoder|model",),
)
def dec_chunked_prefill(t: Target, data: st.DataObject) -> None:
    for s in subjects(t, data):
        dec_chunked_prefill_case(t, data, s)


def dec_chunked_prefill_case(t: Target, data: st.DataObject, s: Subject) -> None:
    """One model of the clause."""
    B, T = batch_and_length(data, s)
    chunks = data.draw(splits(T, min_chunks=min(T, 2)), label="chunk lengths")
    tokens = draw_tokens(data, s, B, T)  # (B, T)
    full = forward(t, s, tokens)  # (B, T, vocab)
    chunked = run_chunks(t, s, tokens, chunks)  # (B, T, vocab)
    what = t.where(
        f"{s.label}: prefill then decode in chunks {chunks} vs forward of {tokens.shape}"
    )
    tol = pair_tolerance(t, s, tokens)
    assert_close(chunked, full, dtype=t.dtype, n=s.reduction, tol=tol, what=what)


@clause(
    "DEC-GREEDY-EQ",
    "greedy generation through the cache picks the same tokens as greedy generation by full "
    "recompute, wherever the recomputed top-1 logit beats the top-2 by more than the tolerance",
    needs=("decoder|model",),
)
def dec_greedy_eq(t: Target, data: st.DataObject) -> None:
    for s in subjects(t, data):
        dec_greedy_eq_case(t, data, s)


def dec_greedy_eq_case(t: Target, data: st.DataObject, s: Subject) -> None:
    """One model of the clause."""
    B, T = batch_and_length(data, s)
    P = prompt_length(data, T, "prompt length P", steps=2)
    prompt = draw_tokens(data, s, B, P)  # (B, P)
    N = T - P + 1  # new tokens; the last one is chosen but never fed back
    logits, cache = prefill(t, s, prompt)  # (B, P, vocab)
    by_cache = [logits[:, -1].argmax(-1)]  # (B,) per new token
    for i in range(1, N):
        logits, cache = decode(t, s, by_cache[-1][:, None], cache, P + i - 1)  # (B, 1, vocab)
        by_cache.append(logits[:, -1].argmax(-1))
    seq, last = prompt, []
    for _ in range(N):
        step = forward(t, s, seq)[:, -1]  # (B, vocab)
        last.append(step)
        seq = np.concatenate([seq, step.argmax(-1)[:, None]], axis=1)  # (B, len(seq) + 1)
    tol = pair_tolerance(t, s, seq[:, :T])
    for b in range(B):
        for i in range(N):
            want, got = int(seq[b, P + i]), int(by_cache[i][b])
            if want == got:
                continue
            top = np.sort(last[i][b])  # (vocab,)
            margin, allowed = top[-1] - top[-2], 2 * tol * float(np.linalg.norm(last[i][b]))
            if margin > allowed:
                raise ClauseFailure(
                    f"batch row {b}, new token {i}: the cached path chose {got} but recompute "
                    f"chose {want}, whose logit leads by {margin:.3g} > {allowed:.3g} "
                    f"(2 x tolerance {tol:.3g} x |logits row|)\n  in "
                    + t.where(f"{s.label}: greedy from prompt{prompt.shape}, {N} new tokens"),
                    error=float(margin),
                    tolerance=allowed,
                    index=[b, i],
                )
            break  # a near-tie: past it the two continuations may rightly differ


@clause(
    "DEC-CROSS-IMPL",
    "forward logits equal the float64 reference decoder's for the same config and seeded "
    "weights, so every implementation agrees with every other through the common reference",
    needs=("decoder",),
)
def dec_cross_impl(t: Target, data: st.DataObject) -> None:
    for s in subjects(t, data, own_weights=True):
        dec_cross_impl_case(t, data, s)


def dec_cross_impl_case(t: Target, data: st.DataObject, s: Subject) -> None:
    """One model of the clause."""
    assert s.config is not None and s.weights is not None
    B, T = batch_and_length(data, s, min_T=1)
    for n, label in enumerate(("token seed", "fresh token seed")):  # the same shape twice
        tokens = draw_tokens(data, s, B, T, label)  # (B, T)
        out = forward(t, s, tokens)  # (B, T, vocab)
        expected = decoder_forward(s.config, s.weights, tokens)  # (B, T, vocab)
        what = t.where(
            f"{s.label}.forward(tokens{tokens.shape}) vs the float64 reference (call {n + 1} of "
            "2 with fresh tokens)"
        )
        tol = model_budget(t, s, tokens, expected)
        assert_close(out, expected, dtype=t.dtype, n=s.reduction, tol=tol, what=what)


@clause(
    "DEC-BATCH-INDEP",
    "each batch row's logits, from forward and from prefill plus decode, equal those of the "
    "same row run alone",
    needs=("decoder|model",),
)
def dec_batch_indep(t: Target, data: st.DataObject) -> None:
    for s in subjects(t, data):
        dec_batch_indep_case(t, data, s)


def dec_batch_indep_case(t: Target, data: st.DataObject, s: Subject) -> None:
    """One model of the clause."""
    B, T = batch_and_length(data, s, min_B=2)
    P = prompt_length(data, T, "prefill length P")
    b = data.draw(st.integers(0, B - 1), label="batch row")
    tokens = draw_tokens(data, s, B, T)  # (B, T)
    row = tokens[b : b + 1]  # (1, T)
    chunks = [P] + [1] * (T - P)
    tol = pair_tolerance(t, s, row)
    paths = (
        ("forward", forward(t, s, tokens), forward(t, s, row)),
        (
            f"prefill P={P} + decode",
            run_chunks(t, s, tokens, chunks),
            run_chunks(t, s, row, chunks),
        ),
    )
    for path, together, alone in paths:  # (B, T, vocab), (1, T, vocab)
        what = t.where(
            f"{s.label}: batch row {b} of tokens{tokens.shape} vs the row alone ({path})"
        )
        assert_close(together[b : b + 1], alone, dtype=t.dtype, n=s.reduction, tol=tol, what=what)
