"""The one error type of the text data path, so the CLI can print it as a single line and tests can match it."""

from __future__ import annotations

from memlab.config import ConfigError


class DataError(ConfigError):
    """Prepared data or a corpus source is missing, damaged or unusable; the message says what to do."""
