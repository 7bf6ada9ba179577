"""The jit-compiled train and eval steps, as pure functions of (state, batch).

The model is rebuilt from its graph definition and parameter state inside the step (nnx.merge), so a step is an
ordinary JAX function of pytrees; the loop jits it with the mesh's shardings. Gradient accumulation scans over micro-batches inside
the step. A non-finite loss or gradient leaves the state untouched and is flagged in the metrics, so the
state the loop checkpoints is always the last good one.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from memlab.objectives import mixed_loss


def make_loss_fn(graphdef, weights: dict) -> Callable:
    def loss_fn(params, batch):
        model = nnx.merge(graphdef, params)
        return mixed_loss(weights, model(batch), batch)
    return loss_fn


def _accumulated_grads(grad_fn, params, batch, accum: int):
    if accum == 1:
        return grad_fn(params, batch)
    micro = jax.tree.map(lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:]), batch)
    zeros = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zeros)

    def body(total, mb):
        return jax.tree.map(jnp.add, total, grad_fn(params, mb)), None

    total, _ = jax.lax.scan(body, zeros, micro)
    return jax.tree.map(lambda x: x / accum, total)


def make_train_step(graphdef, weights: dict, tx: optax.GradientTransformation, schedule, accum: int) -> Callable:
    grad_fn = jax.value_and_grad(make_loss_fn(graphdef, weights), has_aux=True)

    def train_step(state: dict, batch: dict):
        (loss, terms), grads = _accumulated_grads(grad_fn, state["params"], batch, accum)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new = {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state,
               "step": state["step"] + 1}
        kept = {"params": state["params"], "opt_state": state["opt_state"], "step": state["step"] + 1}
        new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, kept)
        metrics = {"train/loss": loss, "grad_norm": grad_norm, "lr": schedule(state["step"]), "finite": finite,
                   **{f"train/{k}": v for k, v in terms.items()}}
        return new, metrics

    return train_step


def make_eval_step(graphdef, weights: dict) -> Callable:
    loss_fn = make_loss_fn(graphdef, weights)

    def eval_step(params, batch):
        loss, terms = loss_fn(params, batch)
        return {"eval/loss": loss, **{f"eval/{k}": v for k, v in terms.items()}}

    return eval_step


def evaluate(eval_step: Callable, params, batches: list[dict], primary: str) -> dict[str, float]:
    """Mean of each metric over the (equal-sized) eval batches; `eval/accuracy` is the primary objective's."""
    per_batch = [eval_step(params, b) for b in batches]
    means = jax.device_get(jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs)), *per_batch))
    out = {k: float(v) for k, v in means.items()}
    out["eval/accuracy"] = out[f"eval/accuracy/{primary}"]
    return out
