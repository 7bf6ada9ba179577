"""The errors a user can fix. The CLI prints any `MemlabError` as one line (no traceback) and exits 2.

This module imports nothing from memlab, so every layer (config, data, models, store, train) can raise these
without importing another layer: the bottom of the dependency graph.
"""

from __future__ import annotations


class MemlabError(ValueError):
    """A problem in what the user gave (a config, a file, an argument); the message says what was wrong and
    what is accepted."""


class ConfigError(MemlabError):
    """A config problem: the message names the key, the value and what is accepted."""


class DataError(ConfigError):
    """Prepared data or a corpus source is missing, damaged or unusable; the message says what to do."""


class StoreError(ConfigError):
    """Bad input to the associative store (shape, dtype, NaN, rule, domain) or a store directory that cannot be
    used."""


class CorruptStoreError(StoreError):
    """Saved store whose bytes differ from what its manifest or journal recorded; never loaded silently."""


class MeshError(ConfigError):
    """A mesh shape or logical-axis rule that cannot be built on the devices at hand."""


class RunFailedError(MemlabError):
    """Training runs that a command needed failed or did not finish; the message names them and their
    directories (each holds train.log and summary.json with the error)."""
