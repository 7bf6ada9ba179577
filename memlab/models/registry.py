"""Model registry: `config.model.name` -> (builder, defaults). Each family registers itself when imported.

`defaults` is a dict of the family's `model.*` knobs; `memlab.defaults.base_config` puts them in the config so
every key a family reads is declared (and so can be overridden and validated).
"""

from __future__ import annotations

from typing import Callable

MODELS: dict[str, Callable] = {}
MODEL_DEFAULTS: dict[str, dict] = {}


def register_model(name: str, defaults: dict) -> Callable[[Callable], Callable]:
    def wrap(builder: Callable) -> Callable:
        if name in MODELS:
            raise ValueError(f"model '{name}' registered twice")
        MODELS[name], MODEL_DEFAULTS[name] = builder, defaults
        return builder
    return wrap
