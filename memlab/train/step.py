"""One optimizer step as a pure function of (state, batch): the loss, the jit-compiled train and eval steps, and
the optimizer with its learning-rate schedule.

The model is rebuilt from its graph definition and parameter state inside the step (nnx.merge), so a step is an
ordinary JAX function of pytrees; the loop jits it with the mesh's shardings. Gradient accumulation scans over
micro-batches inside the step. A non-finite loss or gradient leaves the state untouched and is flagged in the
metrics, so the state the loop checkpoints is always the last good one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from memlab import passes
from memlab.objectives import mixed_loss
from memlab.train.partial import split_trainable

log = logging.getLogger("memlab")


def warmup_steps(train: ml_collections.ConfigDict) -> int:
    """Steps of linear warmup: `train.warmup_fraction` of the steps when it is > 0, else `train.warmup_steps`.

    Warmup ends before the last step, so every schedule reaches its peak: an integer warmup >= train.steps is
    clipped to train.steps - 1 with a warning (a short smoke run of an experiment tuned for a long one still runs).
    """
    steps = train.steps
    if train.warmup_fraction > 0:
        return min(math.ceil(train.warmup_fraction * steps), steps - 1)
    if train.warmup_steps >= steps:
        log.warning(
            "train.warmup_steps=%d >= train.steps=%d: warming up over %d steps instead",
            train.warmup_steps,
            steps,
            steps - 1,
        )
        return steps - 1
    return train.warmup_steps


def learning_rate_schedule(train: ml_collections.ConfigDict) -> optax.Schedule:
    """Warmup from 0 to `train.lr`, then cosine decay, warmup-stable-decay (wsd) or constant."""
    peak, steps, warmup = train.lr, train.steps, warmup_steps(train)
    floor = peak * train.min_lr_ratio
    if train.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, max(warmup, 1), steps, end_value=floor)
    if train.schedule == "wsd":  # warmup, hold at peak, then linear decay over the last decay_fraction of steps
        decay = max(1, int(round(train.decay_fraction * steps)))
        stable = max(steps - warmup - decay, 0)
        return optax.join_schedules(
            [
                optax.linear_schedule(0.0, peak, max(warmup, 1)),
                optax.constant_schedule(peak),
                optax.linear_schedule(peak, floor, decay),
            ],
            boundaries=[warmup, warmup + stable],
        )
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, max(warmup, 1)), optax.constant_schedule(peak)], boundaries=[warmup]
    )


def _decay_mask(params):
    """Weight decay on matrices only: norms' scales and biases are left alone."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(train: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW on the schedule above, after global-norm clipping (`train.grad_clip` > 0)."""
    schedule = learning_rate_schedule(train)
    tx = optax.chain(
        optax.clip_by_global_norm(train.grad_clip) if train.grad_clip > 0 else optax.identity(),
        optax.adamw(schedule, b1=train.b1, b2=train.b2, weight_decay=train.weight_decay, mask=_decay_mask),
    )
    return tx, schedule


def make_loss_fn(graphdef: nnx.GraphDef, weights: dict) -> Callable:
    """loss_fn(params, batch) -> (loss, per-objective terms) of the objective mix `weights`, running each pass
    that a positive weight asks for."""
    needed = passes.active(weights)

    def loss_fn(params, batch):
        model = nnx.merge(graphdef, params)
        return mixed_loss(weights, passes.run(model, batch, needed))

    return loss_fn


def make_grad_fn(graphdef: nnx.GraphDef, weights: dict, trainable: frozenset[str] | None = None) -> Callable:
    """grad_fn(params, batch) -> ((loss, terms), gradient w.r.t. the `trainable` parameters only; None: all)."""
    loss_fn = make_loss_fn(graphdef, weights)

    def grad_fn(params, batch):
        train, frozen = split_trainable(params, trainable)
        value_and_grad = jax.value_and_grad(lambda t: loss_fn(nnx.merge_state(t, frozen), batch), has_aux=True)
        return value_and_grad(train)

    return grad_fn


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


def make_train_step(
    graphdef: nnx.GraphDef,
    weights: dict,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    accum: int,
    trainable: frozenset[str] | None = None,
) -> Callable:
    """train_step(state, batch) -> (state, metrics); `metrics["finite"]` says whether the update was applied. Only
    the `trainable` parameters (None: all) are updated; the others come out bit-identical."""
    grad_fn = make_grad_fn(graphdef, weights, trainable)

    def train_step(state: dict, batch: dict):
        (loss, terms), grads = _accumulated_grads(grad_fn, state["params"], batch, accum)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        train, frozen = split_trainable(state["params"], trainable)
        updates, opt_state = tx.update(grads, state["opt_state"], train)
        updated = {"params": optax.apply_updates(train, updates), "opt_state": opt_state}
        kept = {"params": train, "opt_state": state["opt_state"]}
        updated = jax.tree.map(lambda n, o: jnp.where(finite, n, o), updated, kept)
        new = {
            "params": nnx.merge_state(updated["params"], frozen),
            "opt_state": updated["opt_state"],
            "step": state["step"] + 1,
        }
        metrics = {
            "train/loss": loss,
            "grad_norm": grad_norm,
            "lr": schedule(state["step"]),
            "finite": finite,
            **{f"train/{k}": v for k, v in terms.items()},
        }
        return new, metrics

    return train_step


def make_eval_step(graphdef: nnx.GraphDef, weights: dict, task_metrics: Callable | None = None) -> Callable:
    """eval_step(params, batch) -> {"eval/loss", "eval/<term>" ..., "eval/<task metric>" ...} on one batch;
    `task_metrics(outputs, batch)` adds the task's own metrics (e.g. exact match) from the main pass's outputs."""
    needed = passes.active(weights)
    if task_metrics is not None and passes.MAIN not in needed:
        needed = [passes.MAIN, *needed]

    def eval_step(params, batch):
        ran = passes.run(nnx.merge(graphdef, params), batch, needed)
        loss, terms = mixed_loss(weights, ran)
        extra = task_metrics(*ran[passes.MAIN]) if task_metrics is not None else {}
        return {"eval/loss": loss, **{f"eval/{k}": v for k, v in {**terms, **extra}.items()}}

    return eval_step


def evaluate(eval_step: Callable, params: nnx.State, batches: list[dict], primary: str) -> dict[str, float]:
    """Mean of each metric over the (equal-sized) eval batches; `eval/accuracy` is the primary objective's."""
    per_batch = [eval_step(params, b) for b in batches]
    means = jax.device_get(jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs)), *per_batch))
    out = {k: float(v) for k, v in means.items()}
    out["eval/accuracy"] = out[f"eval/accuracy/{primary}"]
    return out
