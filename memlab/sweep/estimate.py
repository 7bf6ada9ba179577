"""Size and compute of a config without allocating parameters (for `memlab sweep --dry-run` and the claims' plans)."""

from __future__ import annotations

import json

import ml_collections
from flax import nnx

from memlab.config import to_dict
from memlab.models import build_model, count_params
from memlab.train.flops import run_compute
from memlab.train.partial import trainable_names

# Keys that cannot change a model's shapes or its FLOPs per step: configs differing only in them share one abstract
# model, so a plan over many learning rates, seeds and budgets builds each model once.
_SCHEDULE = ("lr", "seed", "steps", "eval_every", "checkpoint_every", "log_every", "warmup_steps", "warmup_fraction")
_SHAPE_FREE = {"train": _SCHEDULE, "logging": None, "eval": None}
_CACHE: dict[str, dict] = {}
_CACHE_SIZE = 512


def estimate(config: ml_collections.ConfigDict) -> dict:
    """Parameter counts, training tokens and analytic training FLOPs of a config (abstract model: no memory), as
    the run will count them: only its trainable parameters train, on every pass its objective mix runs."""
    key = _shape_key(config)
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        _CACHE[key] = _sizes(config)
    sizes = _CACHE[key]
    progress = sizes["compute"].progress(config.train.steps)
    return {**sizes, "tokens": progress["tokens"], "flops": progress["flops"]}


def _shape_key(config: ml_collections.ConfigDict) -> str:
    data = to_dict(config)
    for group, keys in _SHAPE_FREE.items():
        if keys is None:
            data.pop(group, None)
        else:
            for key in keys:
                data.get(group, {}).pop(key, None)
    return json.dumps(data, sort_keys=True, default=str)


def _sizes(config: ml_collections.ConfigDict) -> dict:
    model = nnx.eval_shape(lambda: build_model(config.model, config.train.seed))
    trainable = trainable_names(nnx.state(model, nnx.Param), config.train.trainable)
    compute = run_compute(config, model, trainable)
    return {
        **count_params(model, trainable),
        "flops_per_token": compute.flops_per_token,
        "compute": compute,  # memlab.train.run_dir.Compute: FLOPs after any number of steps, steps for a budget
    }
