"""DeltaNet (`deltanet`; Yang et al. 2024, fla-org/flash-linear-attention's `DeltaNet` layer, read at bc3b101): the
delta-rule write S <- S + beta k (v - S^T k)^T, no decay. Block, kernel and one-token step: MatrixMixer.

Deviations from the anchor:
- The output gate: memlab's block multiplies the normed output by SiLU(W_g x), as Gated DeltaNet; the anchor's
  DeltaNet default (`use_gate=False`) has only the RMSNorm. Kept so that the matrix mixers differ only in their
  write rule; not yet a knob.
- The block's (matrix_block): convs with a bias, RMSNorm eps 1e-6, memlab's initialisation.
- `model.matrix_read`: "after" (the anchor) | "before".
- Not built: the anchor's other q/k activations and norms (`qk_activation`, `qk_norm`; memlab: its defaults, SiLU
  and L2), negative eigenvalues (off in the anchor).
"""

from __future__ import annotations

from memlab.models.mixers.matrix_block import MatrixMixer
from memlab.registry import MIXERS


@MIXERS.register("deltanet")
class DeltaNet(MatrixMixer):
    delta, decay = True, False
