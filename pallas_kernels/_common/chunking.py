"""The time axis cut into chunks, shared by the chunked and Pallas backends of every op: chunk size, padding,
the (batch, chunk) layout of the pure-JAX scans, segment resets, chunk-local gates, and the block primitives
(products, iota masks) that every op's per-chunk math is written in.

Padding tokens carry k = v = 0 (and, per op, a gate that writes nothing) and log-decay 0, which leaves every
state unchanged, so the final state of a padded sequence equals the final state of the original one.

Segments and log-decays: the chunked forms never subtract cumulative log-decays across a state reset. A reset
(a new segment, or a log-decay so negative that exp(g) is below what float32 can distinguish from 0) is
encoded per token as a flag; inside a chunk, ``c`` counts the resets seen so far and two tokens interact only
when their counts are equal. The log-decay at a reset token is replaced by 0 so that the chunk-local
cumulative sum ``G`` stays finite (the token's own decay is irrelevant: the state it would scale is
discarded).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import lax

# exp(-80) ~ 1.8e-35: treating such a decay as a full reset changes results by less than float32 can show.
RESET_LOG_DECAY = -80.0


# ----------------------------------------------------------------------------------------------------------
# Chunk size, padding and layout.


def effective_chunk(T: int, chunk_size: int, multiple: int = 1) -> int:
    """Chunk length actually used: ``chunk_size``, shrunk for short sequences (never below ``multiple``,
    which hardware lowerings may need, e.g. 16 for tensor-core dots)."""
    c = min(chunk_size, T)
    c = -(-c // multiple) * multiple
    return max(c, multiple)


def padded_length(T: int, chunk: int) -> int:
    return -(-T // chunk) * chunk


def pad_time(x: jnp.ndarray | None, T_pad: int, value: Any = 0) -> jnp.ndarray | None:
    """Pad axis 1 (time) of ``x`` to ``T_pad`` with ``value``."""
    if x is None or x.shape[1] == T_pad:
        return x
    widths = [(0, 0)] * x.ndim
    widths[1] = (0, T_pad - x.shape[1])
    return jnp.pad(x, widths, constant_values=value)


def to_chunks(x: jnp.ndarray, C: int) -> jnp.ndarray:
    """[B, Tp, H, *D] -> [N, B, H, C, *D] (scan over the leading chunk axis)."""
    B, Tp, H = x.shape[:3]
    x = x.reshape((B, Tp // C, C, H) + x.shape[3:])
    perm = (1, 0, 3, 2) + tuple(range(4, x.ndim))
    return x.transpose(perm)


def from_chunks(x: jnp.ndarray) -> jnp.ndarray:
    """[N, B, H, C, *D] -> [B, N*C, H, *D]."""
    N, B, H, C = x.shape[:4]
    perm = (1, 0, 3, 2) + tuple(range(4, x.ndim))
    return x.transpose(perm).reshape((B, N * C, H) + x.shape[4:])


# ----------------------------------------------------------------------------------------------------------
# Segments and chunk-local gates.


def segment_resets(segment_ids: jnp.ndarray | None, B: int, T: int) -> jnp.ndarray:
    """[B, T] bool: True where the state resets before the token (the segment id changed). Token 0 never
    resets, so an initial_state applies to the first segment."""
    if segment_ids is None:
        return jnp.zeros((B, T), dtype=bool)
    change = segment_ids[:, 1:] != segment_ids[:, :-1]
    return jnp.concatenate([jnp.zeros((B, 1), dtype=bool), change], axis=1)


def gate_resets(g: jnp.ndarray | None, resets: jnp.ndarray, H: int) -> jnp.ndarray:
    """[B, T, H] bool: segment resets, plus tokens whose log-decay is effectively -inf."""
    r = jnp.broadcast_to(resets[:, :, None], resets.shape + (H,))
    if g is None:
        return r
    return r | (g < RESET_LOG_DECAY)


def chunk_local_gates(
    g: jnp.ndarray | None, resets_bth: jnp.ndarray, chunk: int, acc: Any
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Chunk-local cumulative log-decay G and reset count c, both [B, T, H] (T a multiple of ``chunk``).

    Differentiable in ``g`` (the gradient at reset tokens is exactly zero)."""
    B, T, H = resets_bth.shape
    n = T // chunk
    if g is None:
        G = jnp.zeros((B, T, H), acc)
    else:
        g_eff = jnp.where(resets_bth, jnp.zeros((), acc), g.astype(acc))
        G = jnp.cumsum(g_eff.reshape(B, n, chunk, H), axis=2).reshape(B, T, H)
    c = jnp.cumsum(resets_bth.astype(jnp.int32).reshape(B, n, chunk, H), axis=2).reshape(B, T, H)
    return G, c


def padded_gates(
    log_decay: jnp.ndarray | None,
    segment_ids: jnp.ndarray | None,
    shape: tuple[int, int, int],
    chunk: int,
    acc: Any,
    *,
    decay_resets: bool,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(G, c) of :func:`chunk_local_gates` over the time axis padded to a multiple of ``chunk``.

    ``log_decay`` [B, T, H] (None: no decay) and ``segment_ids`` [B, T] (None: one segment), ``shape`` is
    (B, T, H); with ``decay_resets`` a log-decay below ``RESET_LOG_DECAY`` also counts as a reset."""
    B, T, H = shape
    Tp = padded_length(T, chunk)
    resets = pad_time(segment_resets(segment_ids, B, T), Tp, False)
    log_decay = pad_time(log_decay, Tp)
    return chunk_local_gates(log_decay, gate_resets(log_decay if decay_resets else None, resets, H), chunk, acc)


# ----------------------------------------------------------------------------------------------------------
# Block primitives: arrays with leading batch dims [..., C, D] in pure JAX, 2-D blocks [C, D] in Pallas.


def dot(a: jnp.ndarray, b: jnp.ndarray, ta: bool = False, tb: bool = False) -> jnp.ndarray:
    """Matrix product over the last two dims (leading dims are batch dims): op(a) @ op(b)."""
    nb = a.ndim - 2
    batch = tuple(range(nb))
    ca = a.ndim - 2 if ta else a.ndim - 1
    cb = b.ndim - 1 if tb else b.ndim - 2
    return lax.dot_general(a, b, (((ca,), (cb,)), (batch, batch)), preferred_element_type=a.dtype)


def iota(shape: tuple[int, ...], dim: int) -> jnp.ndarray:
    return lax.broadcasted_iota(jnp.int32, shape, dim)


def last(x: jnp.ndarray) -> jnp.ndarray:
    """x[..., -1:] written as a masked sum (static slicing of register values is not lowerable everywhere)."""
    C = x.shape[-1]
    return jnp.sum(jnp.where(iota((C,), 0) == C - 1, x, jnp.zeros((), x.dtype)), axis=-1, keepdims=True)
