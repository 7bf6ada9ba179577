"""Chunkwise-parallel mLSTM in pure JAX: a ``lax.scan`` over chunks carrying the stabilised state (C, n, m),
whose body is the per-chunk math of ``chunk_math`` batched over (B, H). The ``auto`` backend on every platform
today.

Gradients come from :func:`pallas_kernels._common.vjp.recompute_vjp`: the backward re-runs the cheap state
recurrence to recover the per-chunk incoming states (O(T/C K V) memory, where autodiff of the reference keeps
every per-token state), then walks the chunks in reverse with the hand-derived cotangents.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._common.checks import acc_dtype
from .._common.chunking import effective_chunk, from_chunks, to_chunks
from .._common.vjp import recompute_vjp
from .._common.vma import match_vma
from . import chunk_math as mm


def _load(xc, scale, acc):
    q, k, v, ig, G, c = xc
    return q.astype(acc) * jnp.asarray(scale, acc), k.astype(acc), v.astype(acc), ig, G, c


def _scan(q, k, v, ig, G, c, s0, scale, C, eps, states):
    """Scan over chunks: (final state, per-chunk outputs h) or, with ``states``, (final state, per-chunk
    incoming states) for the backward pass."""
    acc = acc_dtype(q.dtype)
    xs = tuple(to_chunks(x, C) for x in (q, k, v, ig, G, c))

    def step(s, xc):
        q_, k_, v_, i_, G_, c_ = _load(xc, scale, acc)
        out = s if states else mm.chunk_output(q_, k_, v_, i_, G_, c_, s, eps).astype(q.dtype)
        return mm.chunk_state(k_, v_, i_, G_, c_, s), out

    return jax.lax.scan(step, mm.State(*(match_vma(x, *xs) for x in s0)), xs)


def _forward(q, k, v, ig, G, c, s0, *, scale, C, eps):
    sT, h = _scan(q, k, v, ig, G, c, s0, scale, C, eps, states=False)
    return from_chunks(h), sT


def _backward(res, cts, *, scale, C, eps):
    q, k, v, ig, G, c, s0 = res
    dh, dsT = cts
    acc = acc_dtype(q.dtype)
    _, per_chunk = _scan(q, k, v, ig, G, c, s0, scale, C, eps, states=True)
    xs = tuple(to_chunks(x, C) for x in (q, k, v, ig, G, c, dh))

    def step(ds, x):
        xc, s = x
        q_, k_, v_, i_, G_, c_ = _load(xc[:6], scale, acc)
        dq, dk, dv, dig, dG, ds0 = mm.chunk_backward(q_, k_, v_, i_, G_, c_, s, xc[6].astype(acc), ds, eps)
        dq = dq * jnp.asarray(scale, acc)
        return ds0, (dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), dig, dG)

    ds_init = mm.State(*(match_vma(x.astype(acc), *jax.tree.leaves((xs, per_chunk))) for x in dsT))
    ds0, grads = jax.lax.scan(step, ds_init, (xs, per_chunk), reverse=True)
    dq, dk, dv, dig, dG = (from_chunks(x) for x in grads)
    return dq, dk, dv, dig, dG, None, ds0


_core = recompute_vjp(_forward, _backward)


def mlstm_chunked(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    i: jax.Array,
    f: jax.Array,
    *,
    initial_state: tuple[jax.Array, ...] | None,
    segment_ids: jax.Array | None,
    chunk_size: int,
    eps: float,
) -> tuple[jax.Array, mm.State]:
    """Chunked backend entry point; same contract as :func:`.reference.mlstm_reference`."""
    T, K = q.shape[1], q.shape[3]
    C = effective_chunk(T, chunk_size)
    p = mm.prepare(q, k, v, i, f, initial_state, segment_ids, C)
    h, sT = _core(p.q, p.k, p.v, p.ig, p.G, p.c, p.s0, scale=K**-0.5, C=C, eps=float(eps))
    return h[:, :T], sT
