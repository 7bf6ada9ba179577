"""AdamW with warmup + cosine, warmup-stable-decay or constant schedules, and global-norm clipping."""

from __future__ import annotations

import jax
import optax


def learning_rate_schedule(train) -> optax.Schedule:
    peak, steps, warmup = train.lr, train.steps, train.warmup_steps
    floor = peak * train.min_lr_ratio
    if train.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, max(warmup, 1), steps, end_value=floor)
    if train.schedule == "wsd":  # warmup, hold at peak, then linear decay over the last decay_fraction of steps
        decay = max(1, int(round(train.decay_fraction * steps)))
        stable = max(steps - warmup - decay, 0)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, max(warmup, 1)), optax.constant_schedule(peak),
             optax.linear_schedule(peak, floor, decay)],
            boundaries=[warmup, warmup + stable])
    return optax.join_schedules([optax.linear_schedule(0.0, peak, max(warmup, 1)), optax.constant_schedule(peak)],
                                boundaries=[warmup])


def _decay_mask(params):
    """Weight decay on matrices only: norms' scales and biases are left alone."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(train) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = learning_rate_schedule(train)
    tx = optax.chain(
        optax.clip_by_global_norm(train.grad_clip) if train.grad_clip > 0 else optax.identity(),
        optax.adamw(schedule, b1=train.b1, b2=train.b2, weight_decay=train.weight_decay, mask=_decay_mask),
    )
    return tx, schedule
