"""Probes of trained models (they load checkpoints, so they live outside memlab.analysis)."""
