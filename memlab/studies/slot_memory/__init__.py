"""The slot-memory study: how much compute the slot model saves against its baselines (`memlab efficiency`, read
from run directories) and what its slots learn to read (`memlab slots`, which loads a trained run). Each study
keeps its analysis, its probes and its CLI commands together here."""
