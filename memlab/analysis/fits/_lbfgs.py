"""Batched multi-start L-BFGS in JAX.

Scaling-law objectives are non-convex and cheap, so the robust recipe is "start from many points, keep the
best". Running every start as one `vmap`-ed, `jit`-ed `optax.lbfgs` loop turns thousands of scipy calls into a
single compiled program. Callers enable float64 (see `x64`) so results match scipy-grade precision.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu


class MultiStartResult(NamedTuple):
    """Final parameters, objective values and iteration counts, one row per start."""

    params: np.ndarray  # (S, P)
    values: np.ndarray  # (S,)
    iterations: np.ndarray  # (S,)

    def best(self) -> tuple[np.ndarray, float]:
        i = int(np.nanargmin(np.where(np.isfinite(self.values), self.values, np.inf)))
        return self.params[i], float(self.values[i])


def x64():
    """Context that turns on float64 for the fit only, without touching the caller's global JAX config."""
    if jax.config.jax_enable_x64:
        return contextlib.nullcontext()
    return jax.enable_x64(True)


def _minimize(fun, x0, data, *, max_iter: int, gtol: float, ftol: float, memory_size: int, max_ls: int):
    """L-BFGS from one start; stops on small gradient, stalled relative decrease (scipy's ftol) or max_iter."""
    f = functools.partial(fun, data=data)
    opt = optax.lbfgs(
        memory_size=memory_size, linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=max_ls)
    )
    value, grad = jax.value_and_grad(f)(x0)

    def cond(carry):
        _, _, value, grad, prev, it = carry
        small_grad = jnp.max(jnp.abs(grad)) <= gtol
        scale = jnp.maximum(jnp.maximum(jnp.abs(prev), jnp.abs(value)), 1.0)
        stalled = (it > 0) & ((prev - value) <= ftol * scale)
        return (it < max_iter) & ~small_grad & ~stalled & jnp.isfinite(value)

    def body(carry):
        x, state, value, grad, _, it = carry
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
        x_new = optax.apply_updates(x, updates)
        return x_new, state, otu.tree_get(state, "value"), otu.tree_get(state, "grad"), value, it + 1

    carry = (x0, opt.init(x0), value, grad, jnp.asarray(jnp.inf, value.dtype), jnp.asarray(0))
    x, _, value, _, _, it = jax.lax.while_loop(cond, body, carry)
    return x, value, it


@functools.partial(
    jax.jit, static_argnames=("fun", "max_iter", "gtol", "ftol", "memory_size", "max_ls", "batched_data")
)
def _batched(fun, starts, data, *, max_iter, gtol, ftol, memory_size, max_ls, batched_data):
    solve = functools.partial(
        _minimize, fun, max_iter=max_iter, gtol=gtol, ftol=ftol, memory_size=memory_size, max_ls=max_ls
    )
    return jax.vmap(solve, in_axes=(0, 0 if batched_data else None))(starts, data)


def multistart_lbfgs(
    fun: Callable,
    starts,
    data,
    *,
    batched_data: bool = False,
    max_iter: int = 500,
    gtol: float = 1e-12,
    ftol: float = 1e-13,
    memory_size: int = 10,
    max_linesearch_steps: int = 30,
) -> MultiStartResult:
    """Minimise `fun(params, data=data)` from every row of `starts` at once.

    `fun` must be a module-level function (it is a static jit argument, so the compiled program is cached).
    With `batched_data`, every leaf of `data` has a leading axis matching `starts` (one dataset per start,
    e.g. bootstrap weights); otherwise all starts share `data`. Call inside `x64()` for float64.
    """
    starts = jnp.asarray(starts)
    data = jax.tree.map(jnp.asarray, data)
    x, values, its = _batched(
        fun,
        starts,
        data,
        max_iter=max_iter,
        gtol=gtol,
        ftol=ftol,
        memory_size=memory_size,
        max_ls=max_linesearch_steps,
        batched_data=batched_data,
    )
    return MultiStartResult(np.asarray(x), np.asarray(values), np.asarray(its))
