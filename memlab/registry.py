"""The registries of everything chosen by name: model families, mixers, tasks, objectives (by a config) and the
claims `memlab reproduce` checks (by the command line).

A member registers itself with a decorator in its own module (`@MIXERS.register("gdn")`); the package that
holds the members imports them in its `__init__`, and code that looks a name up imports that package. This
module imports nothing but the errors, so registering never closes an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from memlab.errors import ConfigError


class Registry:
    """Name -> member, plus the config key that chooses a member (named in errors)."""

    def __init__(self, key: str):
        self.key = key
        self._members: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def wrap(member: Any) -> Any:
            if name in self._members:
                raise ValueError(f"{self.key} {name!r} registered twice")
            self._members[name] = member
            return member

        return wrap

    def unregister(self, name: str) -> None:
        """Remove a member (a test's temporary task, a plugin being reloaded)."""
        del self._members[name]

    def get(self, name: str) -> Any:
        """The member called `name`, or a ConfigError listing the registered names."""
        if name not in self._members:
            raise ConfigError(f"{self.key}={name!r} is not registered; choose one of {', '.join(self.names())}")
        return self._members[name]

    def names(self) -> list[str]:
        return sorted(self._members)

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)


MODELS = Registry("model.name")  # nnx.Module classes with defaults(), check(cfg) and __init__(cfg, *, rngs)
MIXERS = Registry("model.mixers")  # nnx.Module classes: __init__(cfg, *, rngs, dtype), init_cache, step, check
TASKS = Registry("data.task")  # grain sources: __init__(data_cfg, split, seed), defaults(), check(), example_shapes()
OBJECTIVES = Registry("objective")  # fn(outputs, batch) -> (mean loss, accuracy)
PASSES = Registry("objective pass")  # views of an example, fn(batch) -> batch, named after "@" in objective keys
CLAIMS = Registry("claim")  # memlab.reproduce.claim.Claim subclasses, registered in memlab/reproduce/claims/
