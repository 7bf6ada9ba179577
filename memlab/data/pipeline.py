"""grain pipelines: the task's random-access source -> (host shard) -> batches -> prefetching iterator.

The train iterator is checkpointable (`get_state` / `set_state`), so a resumed run continues with exactly
the batches it would have seen. The eval set is a fixed list of batches from the task's eval stream.
"""

from __future__ import annotations

from typing import Callable

import grain
import jax
import numpy as np

from memlab.data.tasks import TASKS


def _source(config, split: str):
    return TASKS.get(config.data.task)(config.data, split, config.data.seed)


def _host_batches(config, split: str, num_examples: int, batch_size: int) -> grain.MapDataset:
    """Examples [0, num_examples) of a split, this host's share only, in batches of the per-host batch size."""
    hosts, host = jax.process_count(), jax.process_index()
    if batch_size % hosts:
        raise ValueError(f"batch size {batch_size} is not divisible by the {hosts} hosts")
    ds = grain.MapDataset.source(_source(config, split))[:num_examples]
    if hosts > 1:
        ds = ds[host::hosts]
    return ds.batch(batch_size // hosts, drop_remainder=True)


def train_iterator(config) -> grain.DatasetIterator:
    """Iterator over global training batches (batch_size * grad_accum examples per step)."""
    per_step = config.train.batch_size
    ds = _host_batches(config, "train", per_step * config.train.steps, per_step)
    options = grain.ReadOptions(num_threads=config.data.num_workers, prefetch_buffer_size=config.data.prefetch)
    return iter(ds.to_iter_dataset(options))


def eval_batches(config) -> list[dict[str, np.ndarray]]:
    """The fixed evaluation set: `eval.num_examples` examples of the eval stream, in `eval.batch_size` batches."""
    ds = _host_batches(config, "eval", config.eval.num_examples, config.eval.batch_size)
    return [ds[i] for i in range(len(ds))]


def derived_eval_metrics(config) -> Callable[[dict], dict]:
    """The task's metrics computed from the averaged eval metrics (text: `eval/bits_per_byte`), or none:
    a task opts in by defining `derived_eval_metrics(eval_metrics) -> dict` on its source."""
    return getattr(_source(config, "eval"), "derived_eval_metrics", lambda metrics: {})


def task_eval_metrics(config) -> Callable:
    """The task's own eval metrics from the model's outputs (context QA: exact match of whole answers), as
    `fn(outputs, batch) -> {name: scalar}`, or none: a task opts in by defining `eval_metrics(outputs, batch)` on
    its source."""
    return getattr(_source(config, "eval"), "eval_metrics", lambda outputs, batch: {})


def tokens_per_example(config) -> int:
    """Tokens one example feeds the model: the task's own count if it defines `tokens_per_example(cfg)`
    (e.g. context + question + answer), else the size of its `inputs`."""
    task = TASKS.get(config.data.task)
    if hasattr(task, "tokens_per_example"):
        return int(task.tokens_per_example(config.data))
    return int(np.prod(task.example_shapes(config.data)["inputs"]))


def example_shapes(config) -> dict[str, tuple[int, ...]]:
    return TASKS.get(config.data.task).example_shapes(config.data)
