"""Model registry: `config.model.name` -> builder. Each family registers itself when its module is imported."""

from __future__ import annotations

from typing import Callable

MODELS: dict[str, Callable] = {}


def register_model(name: str) -> Callable[[Callable], Callable]:
    def wrap(builder: Callable) -> Callable:
        if name in MODELS:
            raise ValueError(f"model '{name}' registered twice")
        MODELS[name] = builder
        return builder
    return wrap
