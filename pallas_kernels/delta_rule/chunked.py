"""Chunked (WY / UT) delta rule in pure JAX: a ``lax.scan`` over chunks whose body is the per-chunk math of
``chunk_math`` batched over (B, H). The ``auto`` backend on every platform today.

Gradients come from :func:`pallas_kernels._common.vjp.recompute_vjp`: the backward re-runs the cheap state
recurrence to recover the per-chunk states (O(T/C K V) memory instead of the O(T K V) per-token states plain
autodiff of the reference stores), then walks the chunks in reverse, recomputing each chunk's intra-chunk
quantities and applying the hand-derived cotangents.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._common.checks import acc_dtype
from .._common.chunking import effective_chunk, from_chunks, to_chunks
from .._common.vjp import recompute_vjp
from .._common.vma import match_vma
from . import chunk_math as cm

SOLVER = cm.BlockedSolver  # not XLA's triangular_solve: see the BlockedSolver docstring


def _load(xs, scale, acc):
    q, k, v, beta, G, c = xs
    q = q.astype(acc) * jnp.asarray(scale, acc)
    beta = None if beta is None else beta.astype(acc)
    return q, k.astype(acc), v.astype(acc), beta, G, c


def _scan(q, k, v, beta, G, c, h0, scale, C, delta, for_backward):
    """Scan over chunks. Returns (o, final state, per-chunk residuals). With ``for_backward`` the output is
    skipped and the residuals are (incoming state, U, factorisation of I + A) per chunk."""
    acc = acc_dtype(q.dtype)
    xs = tuple(None if x is None else to_chunks(x, C) for x in (q, k, v, beta, G, c))

    def step(S, xc):
        q_, k_, v_, b_, G_, c_ = _load(xc, scale, acc)
        m = cm.masks(G_, c_)
        it = cm.intra(q_, k_, b_, m, SOLVER, delta, need_output=not for_backward)
        U = cm.chunk_update(S, k_, v_, b_, it, m, SOLVER, delta)
        if for_backward:
            out = (None, (S, U if delta else None, it.fac))
        else:
            out = (cm.chunk_output(S, q_, U, it, m).astype(q.dtype), None)
        return cm.chunk_state(S, k_, U, m), out

    hT, (o, res) = jax.lax.scan(step, match_vma(h0, *jax.tree.leaves(xs)), xs)
    return (None if o is None else from_chunks(o)), hT, res


def _forward(q, k, v, beta, G, c, h0, *, scale, C, delta):
    o, hT, _ = _scan(q, k, v, beta, G, c, h0, scale, C, delta, for_backward=False)
    return o, hT


def _backward(res, cts, *, scale, C, delta):
    q, k, v, beta, G, c, h0 = res
    do, dhT = cts
    acc = acc_dtype(q.dtype)
    # Recompute the per-chunk incoming states (and U, (I + A)^-1, which the reverse sweep reuses).
    _, _, per_chunk = _scan(q, k, v, beta, G, c, h0, scale, C, delta, for_backward=True)
    xs = tuple(None if x is None else to_chunks(x, C) for x in (q, k, v, beta, G, c, do))

    def step(dS1, xc):
        (q_, k_, v_, b_, G_, c_), do_ = _load(xc[0][:6], scale, acc), xc[0][6].astype(acc)
        S0, U, fac = xc[1]
        if not delta:
            U = v_
        m = cm.masks(G_, c_)
        QK, KK = cm.gram(q_, k_, delta)
        dS0, dq, dk, dv, db, dG = cm.chunk_backward(q_, k_, v_, b_, S0, dS1, do_, U, fac, QK, KK, m, SOLVER, delta)
        dq = dq * jnp.asarray(scale, acc)
        return dS0, (
            dq.astype(q.dtype),
            dk.astype(k.dtype),
            dv.astype(v.dtype),
            None if db is None else db.astype(beta.dtype),
            dG,
        )

    dS_init = match_vma(dhT.astype(acc), *jax.tree.leaves((xs, per_chunk)))
    dh0, grads = jax.lax.scan(step, dS_init, (xs, per_chunk), reverse=True)
    dq, dk, dv, db, dG = (None if x is None else from_chunks(x) for x in grads)
    return dq, dk, dv, db, dG.astype(G.dtype), None, dh0.astype(h0.dtype)


_core = recompute_vjp(_forward, _backward)


def chunked(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array | None,
    g: jax.Array | None,
    *,
    scale: float,
    initial_state: jax.Array | None,
    segment_ids: jax.Array | None,
    chunk_size: int,
    delta: bool,
) -> tuple[jax.Array, jax.Array]:
    """Chunked backend entry point; same contract as :func:`.reference.recurrent_reference`."""
    T = q.shape[1]
    C = effective_chunk(T, chunk_size)
    p = cm.prepare(q, k, v, beta, g, initial_state, segment_ids, C)
    o, hT = _core(p.q, p.k, p.v, p.beta, p.G, p.c, p.h0, scale=float(scale), C=C, delta=delta)
    return o[:, :T], hT
