"""Synthetic tasks, each a grain random-access source registered under `data.task`.

A task class takes `(data_config, split, seed)`; `split` is "train" or "eval" and selects a disjoint stream of
examples. `__getitem__(i)` is a pure function of (seed, split, i): the same index always gives the same example,
which makes data deterministic across restarts without storing anything. A task class also has
`defaults()` (its `data.*` knobs), `check(data_config)` raising ValueError for bad knobs, and
`example_shapes(data_config)`.
"""

from __future__ import annotations

from memlab.data.tasks import (  # noqa: F401  (each registers itself in TASKS)
    context_qa,
    fact_episodes,
    mqar,
    text,
    text_chunks,
    window_recall,
)
from memlab.registry import TASKS

__all__ = ["TASKS"]
