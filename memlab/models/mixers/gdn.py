"""Gated DeltaNet (`gdn`; Yang et al. 2024, fla-org/flash-linear-attention's `GatedDeltaNet` layer, read at
bc3b101): a learned data-dependent decay S <- alpha S (Mamba-2 parametrisation), then the delta-rule write
S <- S + beta k (v - S^T k)^T. Block, kernel and one-token step: MatrixMixer.

Deviations from the anchor:
- `model.matrix_expand_v`: 2 in the anchor (value dim twice the key dim); memlab's default 1, shared by the matrix
  mixers so that their states are the same size at the same width.
- `model.matrix_head_dim`: the anchor fixes 256; memlab's 0 means d_model // heads (small models).
- A ~ U(1, 16) at the start (Mamba-2's A_init_range), where the anchor draws U(0, 16); not yet a knob.
- The block's (matrix_block): convs with a bias, RMSNorm eps 1e-6, memlab's initialisation.
- `model.matrix_read`: "after" (the anchor) | "before".
- Not built: negative eigenvalues (`allow_neg_eigval`, off in the anchor), grouped value heads (`num_v_heads`).
"""

from __future__ import annotations

from memlab.models.mixers.matrix_block import MatrixMixer
from memlab.registry import MIXERS


@MIXERS.register("gdn")
class GatedDeltaNet(MatrixMixer):
    delta, decay = True, True
