"""Badger's masked mixer (`model.mixer = "masked"` of memory_model): tokens mixed by a learned causal L x L matrix.

    y[i] = sum_{j <= i} W[i, j] x[j] + b[i]

with one matrix W (and bias b) per group of d_model / `model.mixer_heads` channels. It is the anchor's
`Conv1d(L, L, 1)` whose weight is made lower-triangular at every forward (blbadger/memorymodels @ b5bbc77,
mixer_autoencoder.py, `MixerBlock`); the blog reports that autoencoders train worse without the mask.

The matrix fixes the sequence length, so a mixer is built for one length L and accepts only rows of L positions.
The mixer registry builds mixers from the config alone, so this one is not registered: memory_model builds it for
each stack's row length and hands it to `lm.Block`. It has no one-token decoding step (the memory model decodes
whole rows); `state_size` counts what such a step would carry.

Deviations from the anchor:
- The mask: memlab multiplies by it in the forward (the upper triangle gets zero gradient and never acts); the
  anchor overwrites the weights with their lower triangle before each forward (the upper triangle still gets
  gradients and optimizer moments, then is zeroed again). The same function of the used weights.
- `model.mixer_heads` > 1: plain channel groups, each with its own L x L matrix; the anchor's `MixerHead` gives
  each head its own projection d -> d / heads (with bias) before its matrix and a d -> d projection after them.
  Not yet a knob. With one head (the anchor's `n_heads=0` default) the two agree.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


class MaskedMixer(nnx.Module):
    """The causal token-mixing matrices of one layer, for rows of `seq_len` positions: weight [heads, L, L] (row i
    mixes inputs j <= i), bias [heads, L]."""

    def __init__(self, cfg, seq_len: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
        h = cfg.get("mixer_heads", 1)
        # the anchor's default Conv1d init, U(+-1/sqrt(fan_in)) with fan_in = L; replicated (h L^2 numbers)
        bound = 1.0 / math.sqrt(seq_len)
        uniform = lambda shape: jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound)
        self.weight = nnx.Param(uniform((h, seq_len, seq_len)), out_sharding=(None, None, None))  # [head, out, in]
        self.bias = nnx.Param(uniform((h, seq_len)), out_sharding=(None, None))
        self.heads, self.seq_len, self.dtype = h, seq_len, dtype

    def _mask(self) -> jax.Array:
        """W with its upper triangle zeroed (j > i): a token never reads a later one."""
        return jnp.tril(self.weight[...]).astype(self.dtype)

    def __call__(self, x: jax.Array, *, positions: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
        """x [B, L, d] -> y [B, L, d]. Positions are implicit in W's rows; packed documents are not supported (the
        memory model passes none)."""
        b, t, d = x.shape
        if t != self.seq_len:
            raise ValueError(f"the masked mixer was built for rows of {self.seq_len} positions, got {t}")
        if segment_ids is not None:
            raise ValueError("the masked mixer does not take packed documents (segment_ids)")
        xs = x.reshape(b, t, self.heads, d // self.heads)
        y = jnp.einsum("hij,bjhc->bihc", self._mask(), xs) + self.bias[...].T.astype(self.dtype)[None, :, :, None]
        return y.reshape(b, t, d)

    @staticmethod
    def state_size(cfg, seq_len: int) -> int:
        """Decoding state per sequence, in numbers: the seq_len inputs so far (row i reads every earlier input)."""
        return seq_len * cfg.d_model

    @staticmethod
    def forward_flops_per_token(cfg, seq_len: int) -> float:
        """2 L d per token: XLA computes the mix as a dense [L, L] x [L, d] matmul per head group (the masked upper
        triangle included, as XLA's cost analysis counts it); the bias add is not counted, as no elementwise op is."""
        return 2.0 * seq_len * cfg.d_model
