"""Causal multi-head softmax attention with RoPE: the baseline mixer every claim is measured against."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from memlab.models.layers import dense, rope
from memlab.models.mixers import register_mixer


@register_mixer("attn")
class CausalSelfAttention(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs, dtype=jnp.float32):
        d, h = cfg.d_model, cfg.num_heads
        self.num_heads, self.head_dim, self.rope_theta = h, d // h, cfg.rope_theta
        self.q = dense(d, d, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.k = dense(d, d, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.v = dense(d, d, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.o = dense(d, d, ("heads", "embed"), rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array, *, positions: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
        b, t, _ = x.shape
        split = lambda y: y.reshape(b, t, self.num_heads, self.head_dim)
        q = rope(split(self.q(x)), positions, self.rope_theta)
        k = rope(split(self.k(x)), positions, self.rope_theta)
        v = split(self.v(x))
        mask = None
        if segment_ids is not None:  # packed documents never attend across a boundary
            mask = (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True)
        return self.o(out.reshape(b, t, -1))

    @staticmethod
    def state_size(cfg, seq_len: int) -> int:
        """Decoding state per sequence after seq_len tokens, in numbers: the key and value cache."""
        return 2 * seq_len * cfg.d_model

    @staticmethod
    def forward_flops_per_token(cfg, seq_len: int) -> float:
        """Projections (4 d^2 MACs) plus scores and weighted sum over all T keys (dense kernels compute the
        full T x T product and mask it, so that is what is counted)."""
        d = cfg.d_model
        return 2.0 * 4 * d * d + 2.0 * 2 * seq_len * d
