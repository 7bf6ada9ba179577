"""Gated short convolution (Zoology's BaseConv): y = W_o( conv(x) * W_g x ).

Placed before an attention layer it supplies the previous-token features that associative recall needs, the
architecture Zoology uses for its MQAR baselines ("conv,attn"). Decoding carries the conv's last inputs.
Anchor: HazyResearch/zoology's `BaseConv` with a short kernel (read at d88d6f5): y = conv(u) * (W u + b) + u.

Deviations from the anchor:
- An output projection W_o after the product (the anchor has none); the gate projection has no bias (the anchor's
  has one). Not yet knobs.
- No `+ u` inside the mixer: memlab's LM block adds the one residual (the anchor's sits inside its own residual
  block too, so its mixer passes the input twice).
- `model.conv_kernel`: 4, shared with the other mixers' convs; the anchor's BaseConv default is 3.
- Not built: the anchor's long (implicit) convolutions (kernel_size=-1) and its SiLU option (`use_act`, off).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from memlab.models.layers import ShortConv, dense
from memlab.registry import MIXERS


@MIXERS.register("conv")
class GatedShortConv(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs, dtype=jnp.float32):
        d = cfg.d_model
        self.conv = ShortConv(d, cfg.conv_kernel, rngs=rngs, dtype=dtype)
        self.gate = dense(d, d, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.out = dense(d, d, ("mlp", "embed"), rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array, *, positions: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
        return self.out(self.conv(x, segment_ids) * self.gate(x))

    def init_cache(self, batch_size: int, max_len: int) -> jax.Array:
        """The conv's last conv_kernel-1 inputs, whatever max_len."""
        return self.conv.init_cache(batch_size)

    def step(self, x: jax.Array, cache: jax.Array, *, position: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One token x [B, d] -> (y [B, d], cache)."""
        y, cache = self.conv.step(x, cache)
        return self.out(y * self.gate(x)), cache

    @staticmethod
    def state_size(cfg, seq_len: int) -> int:
        """Decoding state per sequence, in numbers: the last conv_kernel - 1 inputs."""
        return (cfg.conv_kernel - 1) * cfg.d_model

    @staticmethod
    def forward_flops_per_token(cfg, seq_len: int) -> float:
        return 2.0 * 2 * cfg.d_model * cfg.d_model + ShortConv.forward_flops_per_token(cfg.d_model, cfg.conv_kernel)
