"""Input preparation shared by the mLSTM backends: gates in the accumulation dtype, the initial state (empty
when none is given) and, for the chunked backends, padding of the time axis and the chunk-local gates."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._checks import acc_dtype
from ._chunking import pad_time, padded_length
from ._mlstm_math import State
from ._segments import chunk_local_gates, gate_resets, segment_resets


def gates(i, f, acc):
    """(input-gate pre-activation, log forget gate log_sigmoid(f)), both in ``acc``."""
    return i.astype(acc), jax.nn.log_sigmoid(f.astype(acc))


def initial(initial_state, B, H, K, V, acc) -> State:
    """The given (C, n, m) in ``acc``, or the empty state (0, 0, -inf): no contribution to any token."""
    if initial_state is None:
        return State(jnp.zeros((B, H, K, V), acc), jnp.zeros((B, H, K), acc), jnp.full((B, H), -jnp.inf, acc))
    return State(*(x.astype(acc) for x in initial_state))


class Prepared(NamedTuple):
    q: jax.Array  # [B, Tp, H, K] (input dtype, zero padded)
    k: jax.Array
    v: jax.Array  # [B, Tp, H, V]
    ig: jax.Array  # [B, Tp, H] input-gate pre-activation (acc), -inf on padding: padding writes nothing
    G: jax.Array  # [B, Tp, H] chunk-local cumulative log forget gate (acc)
    c: jax.Array  # [B, Tp, H] int32 chunk-local reset count
    s0: State


def prepare(q, k, v, i, f, initial_state, segment_ids, chunk: int) -> Prepared:
    B, T, H, K = q.shape
    acc = acc_dtype(q.dtype)
    Tp = padded_length(T, chunk)
    ig, logf = gates(i, f, acc)
    resets = gate_resets(None, pad_time(segment_resets(segment_ids, B, T), Tp, False), H)
    G, c = chunk_local_gates(pad_time(logf, Tp), resets, chunk, acc)
    s0 = initial(initial_state, B, H, K, v.shape[-1], acc)
    return Prepared(pad_time(q, Tp), pad_time(k, Tp), pad_time(v, Tp), pad_time(ig, Tp, -jnp.inf), G, c, s0)
