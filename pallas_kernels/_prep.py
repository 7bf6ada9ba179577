"""Input preparation shared by the chunked backends (pure JAX and Pallas): padding of the time axis to a
multiple of the chunk, segment / log-decay handling, and the default initial state. Everything here is plain,
differentiable JAX, so gradients w.r.t. g and initial_state flow through it by autodiff."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._checks import acc_dtype
from ._chunking import pad_time, padded_length
from ._segments import chunk_local_gates, gate_resets, segment_resets


class Prepared(NamedTuple):
    q: jax.Array  # [B, Tp, H, K] (input dtype, zero padded)
    k: jax.Array
    v: jax.Array  # [B, Tp, H, V]
    beta: jax.Array | None  # [B, Tp, H]
    G: jax.Array  # [B, Tp, H] chunk-local cumulative log-decay (acc dtype)
    c: jax.Array  # [B, Tp, H] int32 chunk-local reset count
    h0: jax.Array  # [B, H, K, V] acc dtype


def prepare(q, k, v, beta, g, initial_state, segment_ids, chunk: int) -> Prepared:
    B, T, H, K = q.shape
    V = v.shape[-1]
    acc = acc_dtype(q.dtype)
    Tp = padded_length(T, chunk)
    resets = pad_time(segment_resets(segment_ids, B, T), Tp, False)
    g = pad_time(g, Tp)
    G, c = chunk_local_gates(g, gate_resets(g, resets, H), chunk, acc)
    h0 = jnp.zeros((B, H, K, V), acc) if initial_state is None else initial_state.astype(acc)
    return Prepared(pad_time(q, Tp), pad_time(k, Tp), pad_time(v, Tp), pad_time(beta, Tp), G, c, h0)
