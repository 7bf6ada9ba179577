"""Chunk-size choice and padding of the time axis, shared by the chunked and Pallas backends.

Padding tokens carry k = v = 0, beta = 0 and log-decay 0, which leaves every state unchanged, so the final
state of a padded sequence equals the final state of the original one.
"""

from __future__ import annotations

import jax.numpy as jnp


def effective_chunk(T: int, chunk_size: int, multiple: int = 1) -> int:
    """Chunk length actually used: ``chunk_size``, shrunk for short sequences (never below ``multiple``,
    which hardware lowerings may need, e.g. 16 for tensor-core dots)."""
    c = min(chunk_size, T)
    c = -(-c // multiple) * multiple
    return max(c, multiple)


def padded_length(T: int, chunk: int) -> int:
    return -(-T // chunk) * chunk


def pad_time(x: jnp.ndarray | None, T_pad: int, value=0) -> jnp.ndarray | None:
    """Pad axis 1 (time) of ``x`` to ``T_pad`` with ``value``."""
    if x is None or x.shape[1] == T_pad:
        return x
    widths = [(0, 0)] * x.ndim
    widths[1] = (0, T_pad - x.shape[1])
    return jnp.pad(x, widths, constant_values=value)

