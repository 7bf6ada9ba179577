"""Size and compute of a config without allocating parameters (for `memlab sweep --dry-run`)."""

from __future__ import annotations

import ml_collections
from flax import nnx

from memlab.data.pipeline import example_shapes, tokens_per_example
from memlab.models import build_model, count_params
from memlab.train.flops import analytic_flops_per_token
from memlab.train.partial import trainable_names


def estimate(config: ml_collections.ConfigDict) -> dict:
    """Parameter counts, training tokens and analytic training FLOPs of a config (abstract model: no memory), as
    the run will count them: only its trainable parameters train, on every pass its objective mix runs."""
    model = nnx.eval_shape(lambda: build_model(config.model, config.train.seed))
    trainable = trainable_names(nnx.state(model, nnx.Param), config.train.trainable)
    per_example = tokens_per_example(config)
    tokens = config.train.steps * config.train.batch_size * per_example
    weights = dict(config.objective)
    flops_per_token = analytic_flops_per_token(model, example_shapes(config), per_example, trainable, weights)
    return {
        **count_params(model, trainable),
        "tokens": tokens,
        "flops_per_token": flops_per_token,
        "flops": flops_per_token * tokens,
    }
