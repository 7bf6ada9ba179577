"""DeltaNet (`deltanet`): the delta-rule write S <- S + beta k (v - S^T k)^T, no decay. Block, kernel and one-token
step: MatrixMixer."""

from __future__ import annotations

from memlab.models.mixers.matrix_block import MatrixMixer
from memlab.registry import MIXERS


@MIXERS.register("deltanet")
class DeltaNet(MatrixMixer):
    delta, decay = True, False
