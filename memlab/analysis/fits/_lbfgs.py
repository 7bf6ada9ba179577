"""Batched multi-start L-BFGS in JAX.

Scaling-law objectives are non-convex and cheap, so the robust recipe is "start from many points, keep the
best". Every start runs `optax.lbfgs` (zoom linesearch) inside one `vmap`-ed, `jit`-ed loop. Starts need very
different iteration counts (median ~10, tail ~200 on the Chinchilla data), and a vmapped while loop costs as
much as its slowest member, so starts are fed through fixed-size slots like continuous batching: every round
advances all slots a few iterations and refills the converged ones from the queue; the tail is compacted into
a smaller slot array. Callers enable float64 (see `x64`) so results match scipy-grade precision.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import NamedTuple

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
        i = int(np.argmin(np.where(np.isfinite(self.values), self.values, np.inf)))
        return self.params[i], float(self.values[i])

    def distinct_best(self, k: int, atol: float = 1e-3) -> np.ndarray:
        """Up to k solutions, best first, that differ from each other by more than `atol` in some parameter."""
        order = np.argsort(np.where(np.isfinite(self.values), self.values, np.inf))
        kept: list[np.ndarray] = []
        for i in order:
            if not np.isfinite(self.values[i]) or len(kept) == k:
                break
            if all(np.max(np.abs(self.params[i] - p)) > atol for p in kept):
                kept.append(self.params[i])
        return np.array(kept)


def x64():
    """Context that turns on float64 for the fit only, without touching the caller's global JAX config."""
    if jax.config.jax_enable_x64:
        return contextlib.nullcontext()
    return jax.enable_x64(True)


class _Opts(NamedTuple):
    """Static solver settings (hashable: part of the jit cache key); tolerances are traced, not static."""

    fun: Callable
    memory_size: int
    max_ls: int

    def solver(self):
        ls = optax.scale_by_zoom_linesearch(max_linesearch_steps=self.max_ls)
        return optax.lbfgs(memory_size=self.memory_size, linesearch=ls)


class _Slot(NamedTuple):
    """One start's L-BFGS state; `prev` is the previous objective value for scipy's ftol test."""

    x: jax.Array
    state: optax.OptState
    value: jax.Array
    grad: jax.Array
    prev: jax.Array
    it: jax.Array


class _Tols(NamedTuple):
    max_iter: jax.Array
    gtol: jax.Array
    ftol: jax.Array


def _running(tols: _Tols, s: _Slot):
    """Not yet converged: scipy L-BFGS-B's tests (projected gradient, relative decrease) plus max_iter."""
    small_grad = jnp.max(jnp.abs(s.grad)) <= tols.gtol
    scale = jnp.maximum(jnp.maximum(jnp.abs(s.prev), jnp.abs(s.value)), 1.0)
    stalled = (s.it > 0) & ((s.prev - s.value) <= tols.ftol * scale)
    return (s.it < tols.max_iter) & ~small_grad & ~stalled & jnp.isfinite(s.value)


def _init(opts: _Opts, x0, data) -> _Slot:
    value, grad = jax.value_and_grad(opts.fun)(x0, data)
    return _Slot(x0, opts.solver().init(x0), value, grad, jnp.asarray(jnp.inf, value.dtype), jnp.asarray(0))


def _advance(opts: _Opts, tols: _Tols, rounds, slot: _Slot, data) -> _Slot:
    """Up to `rounds` more L-BFGS iterations of one start (fewer if it converges)."""
    f = functools.partial(opts.fun, data=data)
    solver = opts.solver()

    def body(carry):
        s, k = carry
        updates, state = solver.update(s.grad, s.state, s.x, value=s.value, grad=s.grad, value_fn=f)
        x = optax.apply_updates(s.x, updates)
        value, grad = otu.tree_get(state, "value"), otu.tree_get(state, "grad")
        # A failed linesearch can return a worse point; then keep the old one and stop (like scipy's
        # ABNORMAL_TERMINATION_IN_LNSRCH): prev == value trips the ftol test.
        worse = ~(value <= s.value)
        x, value, grad = (jnp.where(worse, old, new) for old, new in ((s.x, x), (s.value, value), (s.grad, grad)))
        return _Slot(x, state, value, grad, s.value, s.it + 1), k + 1

    slot, _ = jax.lax.while_loop(lambda c: (c[1] < rounds) & _running(tols, c[0]), body, (slot, 0))
    return slot


@functools.partial(jax.jit, static_argnames=("opts",))
def _step(opts: _Opts, tols: _Tols, rounds, slots: _Slot, active, fresh_x0, refill, data):
    """Refill the slots marked `refill` with fresh starts, advance every slot; return slots and running mask.

    `data` holds one row per slot, so shared-data fits and bootstrap refits run the same compiled program.
    """
    fresh = jax.vmap(functools.partial(_init, opts))(fresh_x0, data)

    def pick(new, old):
        return jnp.where(refill.reshape(refill.shape + (1,) * (new.ndim - 1)), new, old)

    slots = jax.tree.map(pick, fresh, slots)
    slots = jax.vmap(functools.partial(_advance, opts, tols, rounds))(slots, data)
    return slots, jax.vmap(functools.partial(_running, tols))(slots) & active


def _empty_slots(opts: _Opts, n: int, x0, data_row) -> _Slot:
    """Shape template for n slots (all replaced by the first refill)."""
    one = jax.eval_shape(functools.partial(_init, opts), x0, data_row)
    return jax.tree.map(lambda s: jnp.zeros((n,) + s.shape, s.dtype), one)


def _take(tree, index: np.ndarray):
    """Rows `index` of every leaf (the datasets of the running slots; the slots kept when compacting)."""
    return jax.tree.map(lambda leaf: leaf[index], tree)


def multistart_lbfgs(
    fun: Callable,
    starts,
    data,
    *,
    data_index=None,
    max_iter: int = 300,
    gtol: float = 1e-5,
    ftol: float = 2.2e-9,
    memory_size: int = 10,
    max_linesearch_steps: int = 3,
    slots: int = 256,
    tail_slots: int = 32,
    rounds: int = 8,
) -> MultiStartResult:
    """Minimise `fun(params, data)` from every row of `starts` (S, P); gtol/ftol default to scipy's L-BFGS-B.

    `fun` must be a module-level function (static jit argument, so compiled programs are cached). Without
    `data_index` all starts share `data`; with it, every leaf of `data` has a leading axis of datasets and start
    i uses dataset `data_index[i]` (e.g. bootstrap resample weights). Starts run `slots` at a time (refilled as
    they converge), then the last few are compacted into `tail_slots`; both widths are fixed so each compiles
    once per process. Call inside `x64()` for float64.
    """
    dtype = jnp.asarray(0.0).dtype
    starts = np.asarray(starts, dtype=dtype)
    n_starts = len(starts)
    if data_index is None:
        data = jax.tree.map(lambda d: np.asarray(d)[None], data)
        data_index = np.zeros(n_starts, dtype=int)
    data = jax.tree.map(np.asarray, data)
    opts = _Opts(fun, memory_size, max_linesearch_steps)
    tols = _Tols(jnp.asarray(max_iter), jnp.asarray(gtol, dtype), jnp.asarray(ftol, dtype))
    rounds = jnp.asarray(rounds)
    width = slots if n_starts > tail_slots else tail_slots
    state = _empty_slots(opts, width, starts[0], jax.tree.map(lambda d: d[0], data))
    sid = np.full(width, -1)
    running = np.zeros(width, dtype=bool)
    out_x, out_v, out_it = np.empty_like(starts), np.full(n_starts, np.nan), np.zeros(n_starts, dtype=int)
    queued = 0
    while True:
        free = np.flatnonzero(~running)
        take = free[: max(0, min(len(free), n_starts - queued))]
        sid[free] = -1
        sid[take] = np.arange(queued, queued + len(take))
        queued += len(take)
        if not (sid >= 0).any():
            break
        refill = np.zeros(width, dtype=bool)
        refill[take] = True
        fresh = np.repeat(starts[:1], width, axis=0)
        fresh[take] = starts[sid[take]]
        rows = _take(data, data_index[np.maximum(sid, 0)])
        state, running = _step(opts, tols, rounds, state, sid >= 0, fresh, refill, rows)
        running = np.asarray(running)
        done = np.flatnonzero(~running & (sid >= 0))
        if len(done):
            out_x[sid[done]] = np.asarray(state.x)[done]
            out_v[sid[done]] = np.asarray(state.value)[done]
            out_it[sid[done]] = np.asarray(state.it)[done]
        if queued == n_starts and width > tail_slots and running.sum() <= tail_slots:
            keep = np.flatnonzero(running)  # compact the stragglers into the narrow slot array
            keep = np.concatenate([keep, np.flatnonzero(~running)[: tail_slots - len(keep)]])
            state = _take(state, keep)
            sid, running, width = sid[keep], running[keep], tail_slots
    return MultiStartResult(out_x, out_v, out_it)
