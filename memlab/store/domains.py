"""Named memory domains and their default sizes, as a locked ml_collections config so that an override of a
misspelt field fails. `MatrixMemory.for_domain(name)` builds a memory from one entry.

Each domain fits a different use: `facts` holds many precise key -> value facts that get corrected (delta rule,
exact overwrite); `episodes` keeps a compact trace of recent events with wider values (delta rule); `scratch`
is a small cheap accumulator where superposition is acceptable (Hebbian).
"""

from __future__ import annotations

import ml_collections

from memlab.errors import StoreError


def memory_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.growth_threshold = 0.85  # saturation (effective rank of the key occupancy / d_key) that triggers growth
    c.growth_factor = 2  # d_key multiplier at each growth
    c.domains = ml_collections.ConfigDict(
        {
            "facts": {"d_key": 256, "d_value": 256, "rule": "delta"},
            "episodes": {"d_key": 128, "d_value": 512, "rule": "delta"},
            "scratch": {"d_key": 64, "d_value": 64, "rule": "hebbian"},
        }
    )
    c.lock()
    return c


def domain_settings(name: str, config: ml_collections.ConfigDict | None = None) -> dict:
    """Constructor arguments of MatrixMemory for domain `name` of `config` (default: memory_config())."""
    config = memory_config() if config is None else config
    if name not in config.domains:
        raise StoreError(f"unknown memory domain {name!r}; accepted domains: {', '.join(sorted(config.domains))}")
    domain = config.domains[name]
    return {
        "d_key": domain.d_key,
        "d_value": domain.d_value,
        "rule": domain.rule,
        "growth_threshold": config.growth_threshold,
        "growth_factor": config.growth_factor,
    }
