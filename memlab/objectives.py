"""Named training objectives, mixed by the weights in `config.objective` (name -> weight).

An objective maps (model outputs, batch) to a mean loss over the positions it scores, plus the accuracy there.
The total loss is the weighted sum; each term is logged as `loss/<name>`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from memlab.registry import OBJECTIVES


def masked_cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean token cross entropy and accuracy over positions where mask > 0 (fp32)."""
    mask = mask.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    count = jnp.maximum(mask.sum(), 1.0)
    return (ce * mask).sum() / count, (correct * mask).sum() / count


@OBJECTIVES.register("next_token")
def next_token(outputs: dict, batch: dict) -> tuple[jax.Array, jax.Array]:
    """Causal LM loss on every real token (positions with `token_mask`, all positions if absent)."""
    mask = batch.get("token_mask", jnp.ones_like(batch["targets"], dtype=jnp.float32))
    return masked_cross_entropy(outputs["logits"], batch["targets"], mask)


@OBJECTIVES.register("answer")
def answer(outputs: dict, batch: dict) -> tuple[jax.Array, jax.Array]:
    """Loss only where the task marks an answer (`loss_mask`): MQAR values, QA answers. A model whose logits cover
    only part of the example (an encoder-decoder scoring just the answer) returns the matching `targets` and
    `loss_mask` with its logits; those take the place of the batch's."""
    targets, mask = outputs.get("targets", batch["targets"]), outputs.get("loss_mask", batch["loss_mask"])
    return masked_cross_entropy(outputs["logits"], targets, mask)


def check(weights: dict) -> None:
    """Objective names must be registered and weights non-negative with a positive sum."""
    unknown = [n for n in weights if n not in OBJECTIVES]
    if unknown:
        raise ValueError(f"unknown objective(s) {unknown}; registered objectives: {', '.join(OBJECTIVES.names())}")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"objective weights must be >= 0 with a positive sum, got {dict(weights)}")


def mixed_loss(weights: dict, outputs: dict, batch: dict) -> tuple[jax.Array, dict]:
    """Weighted sum of the active objectives; metrics hold each term and the main accuracy."""
    total, metrics = 0.0, {}
    for name, weight in weights.items():
        if weight == 0:
            continue
        loss, accuracy = OBJECTIVES.get(name)(outputs, batch)
        total = total + weight * loss
        metrics[f"loss/{name}"] = loss
        metrics[f"accuracy/{name}"] = accuracy
    return total, metrics
