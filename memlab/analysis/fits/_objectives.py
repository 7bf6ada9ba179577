"""Robust log-space objectives shared by the fits, with hand-fused gradients.

Both laws are log-sum-exps of their terms, so every term stays positive (E >= 0 by construction) and residuals
are measured on log-loss, as in Hoffmann et al. (2022) and Epoch's replication. Each point has a weight, which
lets a bootstrap resample be expressed as integer counts with fixed array shapes.

The multi-start fits spend all their time here, in float64 on CPU, so value and gradient are computed in one
pass with e factored out of the LSE: LSE(t1, t2, e) = e + log1p(exp(t1 - e) + exp(t2 - e)). That costs two
exps and a log1p per point instead of autodiff's ~7 transcendentals (BENCHMARKS.md has the speed-up).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

HUBER_DELTA = 1e-3
_EXP_CAP = 700.0  # exp overflows float64 near 709.8; beyond the cap the fit is hopeless anyway


def huber(r, delta=HUBER_DELTA):
    """Huber loss (scipy.special.huber convention): quadratic within delta, linear outside."""
    abs_r = jnp.abs(r)
    return jnp.where(abs_r <= delta, 0.5 * r**2, delta * (abs_r - 0.5 * delta))


def _with_fused_grad(value_and_grad_fn):
    """Objective(params, data) whose reverse-mode gradient w.r.t. params comes from `value_and_grad_fn`."""

    @jax.custom_vjp
    def objective(params, data):
        return value_and_grad_fn(params, data)[0]

    def fwd(params, data):
        value, grad = value_and_grad_fn(params, data)
        return value, (grad, data)

    def bwd(res, ct):
        grad, data = res
        return ct * grad, jax.tree.map(jnp.zeros_like, data)

    objective.defvjp(fwd, bwd)
    return objective


def chinchilla_log_pred(params, log_n, log_d):
    """log L(N, D) for params (a, b, e, alpha, beta): LSE(a - alpha log N, b - beta log D, e)."""
    a, b, e, alpha, beta = params[0], params[1], params[2], params[3], params[4]
    u1 = jnp.exp(jnp.minimum(a - alpha * log_n - e, _EXP_CAP))
    u2 = jnp.exp(jnp.minimum(b - beta * log_d - e, _EXP_CAP))
    return e + jnp.log1p(u1 + u2)


def _chinchilla_value_and_grad(params, data):
    log_n, log_d, log_l, w = data
    a, b, e, alpha, beta = params[0], params[1], params[2], params[3], params[4]
    u1 = jnp.exp(jnp.minimum(a - alpha * log_n - e, _EXP_CAP))
    u2 = jnp.exp(jnp.minimum(b - beta * log_d - e, _EXP_CAP))
    s = u1 + u2
    r = e + jnp.log1p(s) - log_l
    dr = w * jnp.clip(r, -HUBER_DELTA, HUBER_DELTA) / (1.0 + s)  # Huber'(r) * d log L / d e
    g1, g2 = dr * u1, dr * u2
    grad = jnp.stack([jnp.sum(g1), jnp.sum(g2), jnp.sum(dr), -jnp.sum(g1 * log_n), -jnp.sum(g2 * log_d)])
    return jnp.sum(w * huber(r)), grad


chinchilla_objective = _with_fused_grad(_chinchilla_value_and_grad)
chinchilla_objective.__doc__ = (
    "Weighted SUM of Huber(1e-3) between predicted and observed log-loss; data = (log N, log D, log L, w)."
)


def power_law_log_pred(params, log_x):
    """log y for params (a, e, alpha): log(exp(e) + exp(a) * x**-alpha)."""
    a, e, alpha = params[0], params[1], params[2]
    return e + jnp.log1p(jnp.exp(jnp.minimum(a - alpha * log_x - e, _EXP_CAP)))


def _power_law_value_and_grad(params, data):
    log_x, log_y, w, delta = data
    a, e, alpha = params[0], params[1], params[2]
    u = jnp.exp(jnp.minimum(a - alpha * log_x - e, _EXP_CAP))
    r = e + jnp.log1p(u) - log_y
    dr = w * jnp.clip(r, -delta, delta) / (1.0 + u)
    g = dr * u
    return jnp.sum(w * huber(r, delta)), jnp.stack([jnp.sum(g), jnp.sum(dr), -jnp.sum(g * log_x)])


power_law_objective = _with_fused_grad(_power_law_value_and_grad)
power_law_objective.__doc__ = "Weighted SUM of Huber(delta) on log y; data = (log x, log y, w, delta)."


def pad_points(*columns, weights):
    """Pad per-point columns to a power-of-two length (>= 64) with zero-weight dummy points.

    Zero weight removes a point from value and gradient, and fits of any size up to the bucket then reuse
    the same compiled programs instead of paying XLA's several-second compile again for every run count.
    """
    n = len(weights)
    size = max(64, 1 << (n - 1).bit_length())
    pad = lambda v: np.concatenate([np.asarray(v, dtype=np.float64), np.zeros(size - n)])  # noqa: E731
    return (*(pad(c) for c in columns), pad(weights))
