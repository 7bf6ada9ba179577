"""Chunk-parallel Pallas kernels for the delta-rule family (fla's decomposition of the chunked WY form).

Forward, for every chunk of C tokens (notation of ``chunk_math``):

1. ``wy`` (delta rule only), grid (B, H, chunk): the triangular solve and W = T diag(beta a) K,
   Ubar = T diag(beta) V, every chunk at once;
2. ``states``, grid (B, H, value tile): the one sequential pass, carrying a [K, BV] tile of the state through
   the chunks, S <- gamma S + (diag(b) K)^T U with U = Ubar - W S (U = V for the Hebbian rule); it stores each
   chunk's incoming state and U. Value tiles are independent (U's columns need only S's), so a GPU gets
   B * H * V / BV programs;
3. ``output``, grid (B, H, chunk, value tile): O = diag(a) Q S + (Q K^T * Gam) U.

Backward, the same shape: ``wy`` and ``states`` recompute W, U and the incoming states (nothing per token is kept
between forward and backward); ``dstates``, grid (B, H, value tile), carries the state cotangent backwards
through the chunks (``chunk_math.state_cotangent``) and stores each chunk's outgoing one; ``grads``, grid
(B, H, chunk), applies ``chunk_math.chunk_backward`` to every chunk at once.

Each kernel lowers as the platform wants (``_common/pallas.py``): interpreted on CPU, Triton on GPUs, Mosaic on
TPUs, chosen when the computation is lowered.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from .._common import pallas as plc
from .._common.checks import acc_dtype
from .._common.vjp import recompute_vjp
from . import chunk_math as cm

SOLVER = cm.InverseSolver


def _chunk(q_ref, k_ref, G_ref, c_ref, scale, acc, n=None, C=None):
    """q (times ``scale``; None if ``q_ref`` is), k and the masks of one chunk: the whole block, or chunk ``n``
    of a whole-sequence block."""
    load = (lambda ref: ref[...]) if n is None else (lambda ref: plc.rows(ref, n, C))
    q = None if q_ref is None else load(q_ref).astype(acc) * jnp.asarray(scale, acc)
    G, c = plc.column(load(G_ref)).astype(acc), plc.column(load(c_ref))
    return q, load(k_ref).astype(acc), cm.masks(G, c)


# ----------------------------------------------------------------------------------------------------------
# Kernels.


def _wy_kernel(k_ref, v_ref, beta_ref, G_ref, c_ref, W_ref, Ubar_ref, *, acc):
    _, k, m = _chunk(None, k_ref, G_ref, c_ref, 1.0, acc)
    beta = plc.column(beta_ref[...]).astype(acc)
    it = cm.intra(k, k, beta, m, SOLVER, True, need_output=False)
    W, Ubar = cm.wy(k, v_ref[...].astype(acc), beta, it, m, SOLVER)
    W_ref[...], Ubar_ref[...] = W, Ubar


def _states_kernel(*refs, C, N, delta, acc):
    if delta:
        k_ref, W_ref, Ubar_ref, G_ref, c_ref, h0_ref, states_ref, U_ref, hT_ref = refs
    else:
        k_ref, v_ref, G_ref, c_ref, h0_ref, states_ref, hT_ref = refs

    def body(n, S):
        _, k, m = _chunk(None, k_ref, G_ref, c_ref, 1.0, acc, n, C)
        if delta:
            U = plc.rows(Ubar_ref, n, C) - cm.dot(plc.rows(W_ref, n, C), S)
            plc.store_rows(U_ref, n, C, U)
        else:
            U = plc.rows(v_ref, n, C).astype(acc)
        states_ref[n, :, :] = S
        return cm.chunk_state(S, k, U, m)

    hT_ref[...] = lax.fori_loop(0, N, body, h0_ref[...].astype(acc))


def _output_kernel(q_ref, k_ref, U_ref, G_ref, c_ref, S_ref, o_ref, *, scale, acc):
    q, k, m = _chunk(q_ref, k_ref, G_ref, c_ref, scale, acc)
    it = cm.intra(q, k, None, m, SOLVER, False)
    o_ref[...] = cm.chunk_output(S_ref[...], q, U_ref[...].astype(acc), it, m).astype(o_ref.dtype)


def _dstates_kernel(*refs, scale, C, N, delta, acc):
    if delta:
        q_ref, k_ref, W_ref, do_ref, G_ref, c_ref, dhT_ref, dstates_ref, dh0_ref = refs
    else:
        q_ref, k_ref, do_ref, G_ref, c_ref, dhT_ref, dstates_ref, dh0_ref = refs

    def body(i, dS1):
        n = N - 1 - i
        q, k, m = _chunk(q_ref, k_ref, G_ref, c_ref, scale, acc, n, C)
        P = cm.intra(q, k, None, m, SOLVER, False).P
        W = plc.rows(W_ref, n, C) if delta else None
        dstates_ref[n, :, :] = dS1
        return cm.state_cotangent(q, k, W, dS1, plc.rows(do_ref, n, C).astype(acc), m, P)

    dh0_ref[...] = lax.fori_loop(0, N, body, dhT_ref[...].astype(acc))


def _grads_kernel(*refs, scale, delta, acc):
    if delta:
        q_ref, k_ref, v_ref, beta_ref, G_ref, c_ref, U_ref, S0_ref, dS1_ref, do_ref = refs[:10]
        dq_ref, dk_ref, dv_ref, db_ref, dG_ref = refs[10:]
    else:
        q_ref, k_ref, v_ref, G_ref, c_ref, S0_ref, dS1_ref, do_ref = refs[:8]
        dq_ref, dk_ref, dv_ref, dG_ref = refs[8:]
    q, k, m = _chunk(q_ref, k_ref, G_ref, c_ref, scale, acc)
    v = v_ref[...].astype(acc)
    beta = plc.column(beta_ref[...]).astype(acc) if delta else None
    it = cm.intra(q, k, beta, m, SOLVER, delta, need_output=False)
    U = U_ref[...] if delta else v
    QK, KK = cm.gram(q, k, delta)
    _, dq, dk, dv, db, dG = cm.chunk_backward(  # dS0: the dstates pass carried it
        q, k, v, beta, S0_ref[...], dS1_ref[...], do_ref[...].astype(acc), U, it.fac, QK, KK, m, SOLVER, delta
    )
    dq_ref[...] = (dq * jnp.asarray(scale, acc)).astype(dq_ref.dtype)
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)
    if delta:
        db_ref[...] = plc.as_column(db).astype(db_ref.dtype)
    dG_ref[...] = plc.as_column(dG).astype(dG_ref.dtype)


# ----------------------------------------------------------------------------------------------------------
# Calls. Arrays are head-major (``_common/pallas.py``): q, k [B, H, Tp, K]; v [B, H, Tp, V]; beta, G, c
# [B, H, Tp, 1]; states [B, H, K, V] (per chunk [B, H, N, K, V]).


def _wy(k, v, beta, G, c, *, C, how):
    B, H, Tp, K = k.shape
    V, acc = v.shape[-1], acc_dtype(k.dtype)
    col = plc.chunk_rows(C, 1)
    return plc.call(
        partial(_wy_kernel, acc=acc),
        [k, v, beta, G, c],
        [plc.chunk_rows(C, K), plc.chunk_rows(C, V), col, col, col],
        [((B, H, Tp, K), acc), ((B, H, Tp, V), acc)],
        [plc.chunk_rows(C, K), plc.chunk_rows(C, V)],
        grid=(B, H, Tp // C),
        how=how,
        name="delta_rule_wy",
    )


def _states(k, v, wy, G, c, h0, *, C, how):
    """(incoming state of every chunk, U or None for Hebbian, final state)."""
    B, H, Tp, K = k.shape
    V, acc, N = v.shape[-1], acc_dtype(k.dtype), Tp // C
    BV, delta = how.block_v, wy is not None
    ins = [k, *(wy if delta else [v]), G, c, h0]
    col = plc.seq_rows(Tp, 1)
    in_specs = [plc.seq_rows(Tp, K)] + ([plc.seq_rows(Tp, K)] if delta else []) + [plc.seq_rows(Tp, BV, True)]
    in_specs += [col, col, plc.state_tile(K, BV)]
    outs = [((B, H, N, K, V), acc)] + ([((B, H, Tp, V), acc)] if delta else []) + [((B, H, K, V), acc)]
    out_specs = [plc.seq_states(N, K, BV)] + ([plc.seq_rows(Tp, BV, True)] if delta else []) + [plc.state_tile(K, BV)]
    res = plc.call(
        partial(_states_kernel, C=C, N=N, delta=delta, acc=acc),
        ins,
        in_specs,
        outs,
        out_specs,
        grid=(B, H, V // BV),
        how=how,
        name="delta_rule_states",
    )
    return res[0], (res[1] if delta else None), res[-1]


def _output(q, k, U, G, c, states, *, scale, C, how):
    B, H, Tp, K = q.shape
    V, BV = U.shape[-1], how.block_v
    col = plc.chunk_rows(C, 1)
    (o,) = plc.call(
        partial(_output_kernel, scale=scale, acc=acc_dtype(q.dtype)),
        [q, k, U, G, c, states],
        [plc.chunk_rows(C, K)] * 2 + [plc.chunk_rows(C, BV, True), col, col, plc.chunk_state(K, BV, True)],
        [((B, H, Tp, V), q.dtype)],
        [plc.chunk_rows(C, BV, True)],
        grid=(B, H, Tp // C, V // BV),
        how=how,
        name="delta_rule_output",
    )
    return o


def _dstates(q, k, W, do, G, c, dhT, *, scale, C, how):
    """(cotangent of every chunk's outgoing state, cotangent of the initial state)."""
    B, H, Tp, K = q.shape
    V, acc, N, BV = do.shape[-1], acc_dtype(q.dtype), Tp // C, how.block_v
    delta = W is not None
    col = plc.seq_rows(Tp, 1)
    return plc.call(
        partial(_dstates_kernel, scale=scale, C=C, N=N, delta=delta, acc=acc),
        [q, k, *([W] if delta else []), do, G, c, dhT],
        [plc.seq_rows(Tp, K)] * (3 if delta else 2) + [plc.seq_rows(Tp, BV, True), col, col, plc.state_tile(K, BV)],
        [((B, H, N, K, V), acc), ((B, H, K, V), acc)],
        [plc.seq_states(N, K, BV), plc.state_tile(K, BV)],
        grid=(B, H, V // BV),
        how=how,
        name="delta_rule_dstates",
    )


def _grads(q, k, v, beta, G, c, U, states, dstates, do, *, scale, C, how):
    B, H, Tp, K = q.shape
    V, delta = v.shape[-1], beta is not None
    col, tok_k, tok_v = plc.chunk_rows(C, 1), plc.chunk_rows(C, K), plc.chunk_rows(C, V)
    ins = [q, k, v] + ([beta] if delta else []) + [G, c] + ([U] if delta else []) + [states, dstates, do]
    in_specs = [tok_k, tok_k, tok_v] + ([col] if delta else []) + [col, col] + ([tok_v] if delta else [])
    in_specs += [plc.chunk_state(K, V), plc.chunk_state(K, V), tok_v]
    outs = [(x.shape, x.dtype) for x in (q, k, v, *([beta] if delta else []), G)]
    res = plc.call(
        partial(_grads_kernel, scale=scale, delta=delta, acc=acc_dtype(q.dtype)),
        ins,
        in_specs,
        outs,
        [tok_k, tok_k, tok_v] + ([col] if delta else []) + [col],
        grid=(B, H, Tp // C),
        how=how,
        name="delta_rule_grads",
    )
    return [*res[:3], res[3] if delta else None, res[-1]]


# ----------------------------------------------------------------------------------------------------------
# Differentiation (the custom_vjp itself is _common/vjp.py's).


def _recompute(k, v, beta, G, c, h0, *, C, how):
    """(W or None, per-chunk states, U (V for Hebbian), final state)."""
    wy = _wy(k, v, beta, G, c, C=C, how=how) if beta is not None else None
    states, U, hT = _states(k, v, wy, G, c, h0, C=C, how=how)
    return (None if wy is None else wy[0]), states, (v if U is None else U), hT


def _forward(q, k, v, beta, G, c, h0, *, scale, C, how):
    _, states, U, hT = _recompute(k, v, beta, G, c, h0, C=C, how=how)
    return _output(q, k, U, G, c, states, scale=scale, C=C, how=how), hT


def _backward(res, cts, *, scale, C, how):
    q, k, v, beta, G, c, h0 = res
    do, dhT = cts
    W, states, U, _ = _recompute(k, v, beta, G, c, h0, C=C, how=how)
    dstates, dh0 = _dstates(q, k, W, do, G, c, dhT.astype(h0.dtype), scale=scale, C=C, how=how)
    dq, dk, dv, db, dG = _grads(q, k, v, beta, G, c, U, states, dstates, do, scale=scale, C=C, how=how)
    return dq, dk, dv, db, dG, None, dh0


_core = recompute_vjp(_forward, _backward)


def pallas_chunked(
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
    interpret: bool | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Pallas backend entry point; same contract as :func:`.reference.recurrent_reference`. ``interpret``: None
    picks the lowering per platform (interpreter on CPU), True forces the interpreter."""
    B, T, H, K = q.shape
    V = v.shape[-1]

    def build(kind):
        def run(q, k, v, beta, g, h0, segment_ids):
            C = plc.chunk_length(kind, T, chunk_size)
            Kp, Vp = plc.feature_dim(kind, K), plc.feature_dim(kind, V)
            how = plc.launch(kind, Vp)
            p = cm.prepare(q, k, v, beta if delta else None, g, h0, segment_ids, C)
            hm = lambda x, D=None: plc.head_major(x if D is None else plc.pad_features(x, D))
            h0 = plc.pad_features(plc.pad_features(p.h0, Vp), Kp, axis=-2)
            qkv = hm(p.q, Kp), hm(p.k, Kp), hm(p.v, Vp)
            o, hT = _core(*qkv, hm(p.beta), hm(p.G), hm(p.c), h0, scale=float(scale), C=C, how=how)
            return plc.time_major(o, p.q)[:, :T, :, :V], hT[..., :K, :V]

        return run

    plc.check_tuning(V)
    return plc.per_platform(build, (q, k, v, beta, g, initial_state, segment_ids), interpret)
