"""Size and compute of a config without allocating parameters (for `memlab sweep --dry-run`)."""

from __future__ import annotations

import ml_collections
from flax import nnx

from memlab.data.pipeline import example_shapes, tokens_per_example
from memlab.models import build_model, count_params
from memlab.train.run_dir import analytic_flops_per_token


def estimate(config: ml_collections.ConfigDict) -> dict:
    """Parameter counts, training tokens and analytic training FLOPs of a config (abstract model: no memory)."""
    model = nnx.eval_shape(lambda: build_model(config.model, config.train.seed))
    per_example = tokens_per_example(config)
    tokens = config.train.steps * config.train.batch_size * per_example
    flops_per_token = analytic_flops_per_token(model, example_shapes(config), per_example)
    return {
        **count_params(model),
        "tokens": tokens,
        "flops_per_token": flops_per_token,
        "flops": flops_per_token * tokens,
    }
