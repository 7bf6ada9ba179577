"""One-token decoding for every mixer: `init_cache(mixer, batch, max_len)` and `step(mixer, x_t, cache, position)`.

A mixer class may define `init_cache` / `step` methods itself (the matrix mixers do); for the others the step
lives here, keyed by class, so decoding needs no change to their files. Every step must reproduce the
parallel forward exactly (tests/test_decode.py checks it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from memlab.models.layers import ShortConv, rope

_STEPS: dict[type, tuple] = {}


def init_conv_cache(conv: ShortConv, batch_size: int, dtype) -> jax.Array:
    """The last kernel_size-1 inputs, newest first: buf[:, j-1] = x_{t-j} (zeros before the first token)."""
    return jnp.zeros((batch_size, conv.kernel_size - 1, conv.kernel.shape[1]), dtype)


def conv_step(conv: ShortConv, x: jax.Array, buf: jax.Array) -> tuple[jax.Array, jax.Array]:
    """ShortConv on one token x [B, F] given the previous inputs: y_t = sum_j w_j x_{t-j} + bias."""
    w = conv.kernel[...].astype(conv.dtype)
    y = x * w[0] + jnp.einsum("bjf,jf->bf", buf, w[1:]) + conv.bias[...].astype(conv.dtype)
    return y, jnp.concatenate([x[:, None].astype(buf.dtype), buf[:, :-1]], axis=1)


def init_cache(mixer, batch_size: int, max_len: int):
    if hasattr(mixer, "init_cache"):
        return mixer.init_cache(batch_size, max_len)
    return _lookup(mixer)[0](mixer, batch_size, max_len)


def step(mixer, x: jax.Array, cache, position: jax.Array):
    """x [B, d] at integer `position` (a scalar shared by the batch) -> (y [B, d], new cache)."""
    if hasattr(mixer, "step"):
        return mixer.step(x, cache, position=position)
    return _lookup(mixer)[1](mixer, x, cache, position)


def _lookup(mixer):
    for cls in type(mixer).__mro__:
        if cls in _STEPS:
            return _STEPS[cls]
    raise NotImplementedError(f"mixer {type(mixer).__name__} has no one-token decoding step")


def _attn_cache(m, batch_size, max_len):
    shape = (batch_size, max_len, m.num_heads, m.head_dim)
    convs = [init_conv_cache(conv, batch_size, m.q.dtype) for conv in m.convs]
    return {"k": jnp.zeros(shape, m.q.dtype), "v": jnp.zeros(shape, m.q.dtype), "convs": convs}


def _attn_step(m, x, cache, position):
    """KV cache of max_len slots; the query at `position` attends to slots 0..position."""
    b = x.shape[0]
    pos = jnp.broadcast_to(position, (b, 1))
    split = lambda y: y.reshape(b, 1, m.num_heads, m.head_dim)
    q, k, v = m.q(x), m.k(x), m.v(x)
    convs = []
    if m.convs:
        stepped = [conv_step(conv, y, buf) for conv, y, buf in zip(m.convs, (q, k, v), cache["convs"])]
        (q, k, v), convs = zip(*stepped)
    q, k = rope(split(q), pos, m.rope_theta), rope(split(k), pos, m.rope_theta)
    ks = jax.lax.dynamic_update_slice_in_dim(cache["k"], k.astype(cache["k"].dtype), position, axis=1)
    vs = jax.lax.dynamic_update_slice_in_dim(cache["v"], split(v).astype(cache["v"].dtype), position, axis=1)
    mask = (jnp.arange(ks.shape[1]) <= position)[None, None, None, :]
    out = jax.nn.dot_product_attention(q, ks, vs, mask=mask)
    return m.o(out.reshape(b, -1)), {"k": ks, "v": vs, "convs": list(convs)}


def _conv_cache(m, batch_size, max_len):
    return init_conv_cache(m.conv, batch_size, m.gate.dtype)


def _conv_mixer_step(m, x, cache, position):
    y, cache = conv_step(m.conv, x, cache)
    return m.out(y * m.gate(x)), cache


def _register_builtin():
    from memlab.models.mixers.attention import CausalSelfAttention
    from memlab.models.mixers.conv import GatedShortConv

    _STEPS[CausalSelfAttention] = (_attn_cache, _attn_step)
    _STEPS[GatedShortConv] = (_conv_cache, _conv_mixer_step)


_register_builtin()
