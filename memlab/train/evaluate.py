"""Scoring a trained model away from its training run: on its own eval set, on another task's (a recall model on
text, an episode at another distance), with changed evaluation-time model knobs (an ablation such as a zeroed
memory read), or on eval batches transformed first (a retrieval baseline). Computed as training's eval is: the
same eval step, the task's metrics and the metrics derived from them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import jax
import ml_collections
from flax import nnx

from memlab.config import apply_overrides, parse_value, to_dict, validate
from memlab.data.pipeline import derived_eval_metrics, eval_batches, task_eval_metrics
from memlab.defaults import base_config
from memlab.errors import ConfigError
from memlab.models import build_model
from memlab.train.checkpoint import load_model
from memlab.train.step import evaluate, make_eval_step


def evaluate_model(
    model: nnx.Module, config: ml_collections.ConfigDict, transform: Callable[[dict], dict] | None = None
) -> dict[str, float]:
    """Eval metrics of `model` on `config`'s eval set (one device), each batch passed through `transform` first."""
    weights = dict(config.objective)
    graphdef, params = nnx.split(model, nnx.Param)
    eval_step = jax.jit(make_eval_step(graphdef, weights, task_eval_metrics(config)))
    batches = [transform(b) if transform else b for b in eval_batches(config)]
    scores = evaluate(eval_step, params, batches, next(k for k, v in weights.items() if v > 0))
    return {**scores, **derived_eval_metrics(config)(scores)}


def changed_config(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
    """`config` with `key=value` overrides applied and validated. `data.task=NAME` first replaces the data group
    with that task's defaults (seed and reader settings kept), so the other data overrides name its knobs."""
    overrides = list(overrides)
    data = to_dict(config)
    task = [parse_value(o.partition("=")[2]) for o in overrides if o.partition("=")[0].strip() == "data.task"]
    if task and task[-1] != config.data.task:
        fresh = to_dict(base_config(task[-1], config.model.name).data)
        keep = {k: data["data"][k] for k in ("seed", "num_workers", "prefetch")}
        data["data"] = {**fresh, **keep}
    out = ml_collections.ConfigDict(data)
    apply_overrides(out, [o for o in overrides if o.partition("=")[0].strip() != "data.task"])
    validate(out)
    if out.data.get("vocab_size", 0) > out.model.vocab_size:
        raise ConfigError(
            f"data.vocab_size={out.data.vocab_size} exceeds the model's vocabulary ({out.model.vocab_size}): "
            "its tokens have no embedding; evaluate on data within the model's vocabulary"
        )
    out.lock()
    return out


def evaluate_run(
    run_dir: str | Path,
    overrides: Iterable[str] = (),
    step: int | None = None,
    transform: Callable[[dict], dict] | None = None,
) -> dict[str, float]:
    """Eval metrics of a run's checkpoint under `overrides` (see `evaluate_changed`)."""
    model, config, _ = load_model(run_dir, step)
    return evaluate_changed(model, config, overrides, transform)


def evaluate_changed(
    model: nnx.Module,
    config: ml_collections.ConfigDict,
    overrides: Iterable[str] = (),
    transform: Callable[[dict], dict] | None = None,
) -> dict[str, float]:
    """Eval metrics of a loaded `model` (trained with `config`) under `overrides`: data, eval and model knobs that
    leave the parameters' shapes alone; a changed model config rebuilds the model around the same parameters."""
    changed = changed_config(config, overrides)
    if to_dict(changed.model) != to_dict(config.model):
        rebuilt = build_model(changed.model, changed.train.seed)
        nnx.update(rebuilt, nnx.state(model, nnx.Param))
        model = rebuilt
    return evaluate_model(model, changed, transform)
