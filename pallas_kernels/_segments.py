"""Packed-document (segment id) and log-decay handling shared by the chunked and Pallas backends.

The chunked forms never subtract cumulative log-decays across a state reset. A reset (a new segment, or a
log-decay so negative that exp(g) is below what float32 can distinguish from 0) is encoded per token as a
flag; inside a chunk, ``c`` counts the resets seen so far and two tokens interact only when their counts are
equal. The log-decay at a reset token is replaced by 0 so that the chunk-local cumulative sum ``G`` stays
finite (the token's own decay is irrelevant: the state it would scale is discarded).
"""

from __future__ import annotations

import jax.numpy as jnp

# exp(-80) ~ 1.8e-35: treating such a decay as a full reset changes results by less than float32 can show.
RESET_LOG_DECAY = -80.0


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
    g: jnp.ndarray | None, resets_bth: jnp.ndarray, chunk: int, acc
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
