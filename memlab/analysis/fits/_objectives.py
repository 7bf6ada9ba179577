"""Robust log-space objectives shared by the fits.

Both laws are written as a log-sum-exp of their terms, so every term stays positive (E >= 0 by construction)
and residuals are measured on log-loss, as in Hoffmann et al. (2022) and Epoch's replication. Each point has a
weight, which lets a bootstrap resample be expressed as integer counts with a fixed array shape.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.special import logsumexp

HUBER_DELTA = 1e-3


def huber(r, delta=HUBER_DELTA):
    """Huber loss (scipy.special.huber convention): quadratic within delta, linear outside."""
    abs_r = jnp.abs(r)
    return jnp.where(abs_r <= delta, 0.5 * r**2, delta * (abs_r - 0.5 * delta))


def chinchilla_log_pred(params, log_n, log_d):
    """log L(N, D) for params (a, b, e, alpha, beta): LSE(a - alpha log N, b - beta log D, e)."""
    a, b, e, alpha, beta = params[0], params[1], params[2], params[3], params[4]
    terms = jnp.stack([a - alpha * log_n, b - beta * log_d, jnp.broadcast_to(e, log_n.shape)])
    return logsumexp(terms, axis=0)


def chinchilla_objective(params, data):
    """Weighted SUM of Huber(delta) between predicted and observed log-loss; data = (log N, log D, log L, w)."""
    log_n, log_d, log_l, w = data
    return jnp.sum(w * huber(chinchilla_log_pred(params, log_n, log_d) - log_l))


def power_law_log_pred(params, log_x):
    """log y for params (a, e, alpha): log(exp(e) + exp(a) * x**-alpha)."""
    a, e, alpha = params[0], params[1], params[2]
    return jnp.logaddexp(a - alpha * log_x, e)


def power_law_objective(params, data):
    """Weighted SUM of Huber(delta) on log y; data = (log x, log y, w, delta)."""
    log_x, log_y, w, delta = data
    return jnp.sum(w * huber(power_law_log_pred(params, log_x) - log_y, delta))
