"""Errors of the associative store, so the CLI prints them as one line and tests can match them."""

from __future__ import annotations

from memlab.config import ConfigError


class StoreError(ConfigError):
    """Bad input to a memory (shape, dtype, NaN, rule, domain) or a store directory that cannot be used."""


class CorruptStoreError(StoreError):
    """Saved memory whose bytes differ from what its manifest or journal recorded; never loaded silently."""
