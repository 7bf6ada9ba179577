"""Training compute: analytic FLOPs per token from the model, cross-checked by XLA's cost analysis.

Training FLOPs are counted as 3x the forward pass (backward = 2x forward), the convention of Kaplan et al. and
Hoffmann et al.; XLA's figure comes from compiling one micro-batch's forward+backward.
"""

from __future__ import annotations

import jax


def analytic_flops_per_token(model, example_shapes: dict) -> float:
    tokens = _tokens_per_example(example_shapes)
    return 3.0 * model.forward_flops_per_example(example_shapes) / tokens


def _tokens_per_example(example_shapes: dict) -> int:
    shape = example_shapes.get("inputs") or next(iter(example_shapes.values()))
    size = 1
    for dim in shape:
        size *= dim
    return size


def xla_flops_per_token(grad_fn, params, micro_batch: dict) -> float | None:
    """FLOPs XLA counts for value_and_grad on one micro-batch, per input token (None if unavailable)."""
    compiled = jax.jit(grad_fn).lower(params, micro_batch).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    tokens = micro_batch["inputs"].size
    return float(analysis["flops"]) / tokens
