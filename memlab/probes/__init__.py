"""Probes of trained runs: what a frozen part of a model holds, measured by training a small model on top of it."""
