"""Gated DeltaNet (`gdn`; Yang et al. 2024): a learned data-dependent decay S <- alpha S (Mamba-2 parametrisation),
then the delta-rule write S <- S + beta k (v - S^T k)^T. Block, kernel and one-token step: MatrixMixer."""

from __future__ import annotations

from memlab.models.mixers.matrix_block import MatrixMixer
from memlab.registry import MIXERS


@MIXERS.register("gdn")
class GatedDeltaNet(MatrixMixer):
    delta, decay = True, True
