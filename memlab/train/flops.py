"""Training compute: analytic FLOPs per token from the model, cross-checked by XLA's cost analysis.

Training FLOPs are counted as 3x the forward pass (backward = 2x forward), the convention of Kaplan et al. and
Hoffmann et al.; XLA's figure comes from compiling one micro-batch's forward+backward.
"""

from __future__ import annotations

import jax


def analytic_flops_per_token(model, example_shapes: dict, tokens_per_example: int) -> float:
    return 3.0 * model.forward_flops_per_example(example_shapes) / tokens_per_example


def xla_flops_per_token(grad_fn, params, micro_batch: dict, tokens_per_example: int) -> float | None:
    """FLOPs XLA counts for value_and_grad on one micro-batch, per token (None if the backend reports none)."""
    compiled = jax.jit(grad_fn).lower(params, micro_batch).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    examples = len(next(iter(jax.tree.leaves(micro_batch))))
    return float(analysis["flops"]) / (examples * tokens_per_example)
