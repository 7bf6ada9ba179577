"""Synthetic tasks, each a grain random-access source registered under `data.task`.

A task class takes `(data_config, split, seed)`; `split` is "train" or "eval" and selects a disjoint stream of
examples. `__getitem__(i)` is a pure function of (seed, split, i): the same index always gives the same example,
which makes data deterministic across restarts without storing anything. A task class also has
`defaults()` (its `data.*` knobs), `check(data_config)` raising ValueError for bad knobs, and
`example_shapes(data_config)`.
"""

from __future__ import annotations

from typing import Callable

TASKS: dict[str, type] = {}


def register_task(name: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        TASKS[name] = cls
        return cls
    return wrap


def get_task(name: str) -> type:
    if name not in TASKS:
        raise KeyError(f"unknown data.task '{name}'; registered tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


from memlab.data.tasks import mqar  # noqa: E402,F401
from memlab.data.tasks import text  # noqa: E402,F401
from memlab.data.tasks import context_qa  # noqa: E402,F401
