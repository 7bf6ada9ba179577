"""Hebbian memory (`hebbian`): the outer-product write S <- S + k v^T, i.e. linear attention; with
`model.hebbian_decay` the same learned decay alpha as gdn (gated linear attention). Block, kernel and one-token
step: MatrixMixer. The anchor is linear attention in MatrixMixer's block (fla-org/flash-linear-attention's
`GatedDeltaNet` layer, read at bc3b101, without its delta write), so that it differs from gdn and deltanet in the
write alone.

Deviations from the anchor:
- fla-org's own `LinearAttention` layer (read at bc3b101) is another block: no short convs, an
  "elementwise_product" feature map on q and k instead of SiLU + L2 norm, no output gate. Not built: memlab's
  comparisons hold the block fixed across the matrix mixers.
- The block's (matrix_block): convs with a bias, RMSNorm eps 1e-6, memlab's initialisation.
- `model.hebbian_decay`: off (plain linear attention); on, alpha is gdn's (Mamba-2) per-head decay rather than the
  gate of fla-org's `GatedLinearAttention` (low-rank, per key channel, logsigmoid / 16).
- `model.matrix_read`: "after" (the anchor) | "before".
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from memlab.models.mixers.matrix_block import MatrixMixer
from memlab.registry import MIXERS


@MIXERS.register("hebbian")
class Hebbian(MatrixMixer):
    delta, decay = False, False

    def __init__(self, cfg, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.decay = bool(cfg.hebbian_decay)
        super().__init__(cfg, rngs=rngs, dtype=dtype)

    @classmethod
    def forward_flops_per_token(cls, cfg, seq_len: int) -> float:
        """The block's count without decay, plus the alpha projection when `model.hebbian_decay` is on."""
        decay = 2.0 * cfg.d_model * cfg.num_heads if cfg.hebbian_decay else 0.0
        return super().forward_flops_per_token(cfg, seq_len) + decay
