"""Size and compute of a config without allocating parameters (for `memlab sweep --dry-run`)."""

from __future__ import annotations

import ml_collections
from flax import nnx

from memlab.models import build_model, count_params
from memlab.train.flops import run_compute
from memlab.train.partial import trainable_names


def estimate(config: ml_collections.ConfigDict) -> dict:
    """Parameter counts, training tokens and analytic training FLOPs of a config (abstract model: no memory), as
    the run will count them: only its trainable parameters train, on every pass its objective mix runs."""
    model = nnx.eval_shape(lambda: build_model(config.model, config.train.seed))
    trainable = trainable_names(nnx.state(model, nnx.Param), config.train.trainable)
    compute = run_compute(config, model, trainable)
    progress = compute.progress(config.train.steps)
    return {
        **count_params(model, trainable),
        "tokens": progress["tokens"],
        "flops_per_token": compute.flops_per_token,
        "flops": progress["flops"],
        "compute": compute,  # memlab.train.run_dir.Compute: FLOPs after any number of steps, steps for a budget
    }
