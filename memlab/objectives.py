"""Named training objectives, mixed by the weights in `config.objective` (key -> weight).

An objective maps (model outputs, batch) to a mean loss over the positions it scores, plus the accuracy there (None
for a regulariser). A
key is an objective's name, or `name@pass` to score a named view of the example (see memlab.passes). The total
loss is the weighted sum; each term is logged as `loss/<key>`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from memlab.passes import MAIN, split_key
from memlab.registry import OBJECTIVES, PASSES


def masked_cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean token cross entropy and accuracy over positions where mask > 0 (fp32)."""
    mask = mask.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    count = jnp.maximum(mask.sum(), 1.0)
    return (ce * mask).sum() / count, (correct * mask).sum() / count


@OBJECTIVES.register("next_token")
def next_token(outputs: dict, batch: dict) -> tuple[jax.Array, jax.Array]:
    """Causal LM loss on every real token (positions with `token_mask`, all positions if absent). A model that
    predicts something else than the batch's next tokens (an autoencoder regenerating its inputs) returns its
    `targets` and `token_mask` with its logits; those take the place of the batch's."""
    targets = outputs.get("targets", batch["targets"])
    mask = outputs.get("token_mask", batch.get("token_mask", jnp.ones_like(targets, dtype=jnp.float32)))
    return masked_cross_entropy(outputs["logits"], targets, mask)


@OBJECTIVES.register("answer")
def answer(outputs: dict, batch: dict) -> tuple[jax.Array, jax.Array]:
    """Loss only where the task marks an answer (`loss_mask`): MQAR values, QA answers. A model whose logits cover
    only part of the example (an encoder-decoder scoring just the answer) returns the matching `targets` and
    `loss_mask` with its logits; those take the place of the batch's."""
    targets, mask = outputs.get("targets", batch["targets"]), outputs.get("loss_mask", batch["loss_mask"])
    return masked_cross_entropy(outputs["logits"], targets, mask)


@OBJECTIVES.register("delta_mem_beta")
def delta_mem_beta(outputs: dict, batch: dict) -> tuple[jax.Array, None]:
    """δ-mem's write regulariser (mean beta over the writing tokens - 0.05)^2, beta averaged over the δ-mem layers:
    keeps the state from being overwritten wholesale at every token (the anchor weighs it 0.01). No accuracy."""
    if "delta_mem_beta" not in outputs:
        raise ValueError("objective delta_mem_beta needs a model with δ-mem adapters (model.delta_mem)")
    return (outputs["delta_mem_beta"] - 0.05) ** 2, None


def check(weights: dict) -> None:
    """Objective keys (`name` or `name@pass`) must name registered objectives and passes, with weights >= 0 and a
    positive sum."""
    unknown = [k for k in weights if split_key(k)[0] not in OBJECTIVES]
    if unknown:
        raise ValueError(f"unknown objective(s) {unknown}; registered objectives: {', '.join(OBJECTIVES.names())}")
    passes = [k for k in weights if split_key(k)[1] not in (MAIN, *PASSES)]
    if passes:
        raise ValueError(
            f"unknown pass in {passes} (after '@'); registered passes: {', '.join(PASSES.names())}, or none for the "
            "example as it comes"
        )
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"objective weights must be >= 0 with a positive sum, got {dict(weights)}")


def mixed_loss(weights: dict, passes: dict[str, tuple[dict, dict]]) -> tuple[jax.Array, dict]:
    """Weighted sum of the positively weighted objectives, each on the (outputs, batch) of the pass it names (see
    memlab.passes.run); metrics hold each term's per-token mean loss and accuracy."""
    total, metrics = 0.0, {}
    for key, weight in weights.items():
        if weight == 0:
            continue
        name, pass_name = split_key(key)
        loss, accuracy = OBJECTIVES.get(name)(*passes[pass_name])
        total = total + weight * loss
        metrics[f"loss/{key}"] = loss
        if accuracy is not None:
            metrics[f"accuracy/{key}"] = accuracy
    return total, metrics
