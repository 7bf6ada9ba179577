"""Training FLOPs per token, analytic and as XLA counts them.

Analytic: 3x the forward pass when everything trains (backward = 2x forward, the convention of Kaplan et al. and
Hoffmann et al.); a frozen stage costs less (memlab.models.stages); every pass the objective mix runs is counted
(memlab.passes). XLA: the cost analysis of the compiled gradient computation, recorded beside it as a check.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import ml_collections
from flax import nnx

from memlab import passes
from memlab.data.pipeline import example_shapes, tokens_per_example
from memlab.models.params import flat_params
from memlab.models.stages import training_flops
from memlab.train import curriculum
from memlab.train.run_dir import Compute


def analytic_flops_per_token(
    model: nnx.Module,
    example_shapes: dict,
    tokens_per_example: int,
    trainable: frozenset[str] | None = None,
    weights: dict | None = None,
) -> float:
    """Training FLOPs per token when the `trainable` parameters train (None: all) on the passes of the objective
    mix `weights` (None: the example as it comes)."""
    sizes = {name: int(x.size) for name, x in flat_params(nnx.state(model, nnx.Param)).items()}
    names = passes.active(weights) if weights else [passes.MAIN]
    total = sum(
        training_flops(model.flop_stages(passes.view_shapes(name, example_shapes)), sizes, trainable) for name in names
    )
    return total / tokens_per_example


def run_compute(config: ml_collections.ConfigDict, model: nnx.Module, trainable: frozenset[str] | None) -> Compute:
    """The run's compute accounting: tokens per step and analytic FLOPs per token of each objective mix it trains
    on (the curriculum's over its first steps, if any)."""
    per_example = tokens_per_example(config)
    flops = {
        phase: analytic_flops_per_token(model, example_shapes(config), per_example, trainable, weights)
        for phase, weights in curriculum.mixes(config).items()
    }
    return Compute(
        config.train.batch_size * per_example,
        flops[curriculum.MAIN],
        config.train.get("curriculum_steps", 0),
        flops.get(curriculum.EARLY, 0.0),
    )


def xla_flops_per_token(
    grad_fn: Callable, params: nnx.State, batch: dict, tokens_per_example: int, accum: int = 1
) -> float | None:
    """FLOPs XLA counts for `grad_fn` (value and gradient of the loss) on one micro-batch (1/`accum` of `batch`),
    per token; None if the backend reports none. It compiles the unpartitioned computation from shapes alone, so
    the figure is the global one whatever mesh `params` and `batch` live on."""
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    micro = jax.tree.map(lambda x: jax.ShapeDtypeStruct((x.shape[0] // accum, *x.shape[1:]), x.dtype), batch)
    analysis = jax.jit(grad_fn).lower(params, micro).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    examples = jax.tree.leaves(micro)[0].shape[0]
    return float(analysis["flops"]) / (examples * tokens_per_example)
