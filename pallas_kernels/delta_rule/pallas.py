"""Chunk-parallel Pallas kernels for the delta-rule family (fla's decomposition of the chunked WY form).

Forward, for every chunk of C tokens (notation of ``chunk_math``):

1. ``wy`` (delta rule only), grid (B, H, chunk): the triangular solve and W = T diag(beta a) K,
   Ubar = T diag(beta) V, every chunk at once;
2. ``states``, the one sequential pass (``_common/pallas.py: sequential``), (B, H, value tile) programs carrying
   a [K, BV] tile of the state through the chunks, S <- gamma S + (diag(b) K)^T U with U = Ubar - W S (U = V for
   the Hebbian rule); it stores each chunk's incoming state and U. Value tiles are independent (U's columns
   need only S's), so a GPU gets B * H * V / BV programs;
3. ``output``, grid (B, H, chunk, value tile): O = diag(a) Q S + (Q K^T * Gam) U.

Backward, the same shape: ``wy`` and ``states`` recompute W, U and the incoming states (nothing per token is kept
between forward and backward); ``dstates``, sequential in reverse, carries the state cotangent backwards through
the chunks (``chunk_math.state_cotangent``) and stores each chunk's outgoing one; ``grads``, grid (B, H, chunk),
applies ``chunk_math.chunk_backward`` to every chunk at once.

Each kernel lowers as the platform wants (``_common/pallas.py``): interpreted on CPU, Triton on GPUs, Mosaic on
TPUs, chosen when the computation is lowered. W, U and the states are kept in float32 (float64 for float64
inputs) whatever the input dtype.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from .._common import pallas as plc
from .._common.checks import acc_dtype
from .._common.vjp import recompute_vjp
from . import chunk_math as cm

SOLVER = cm.InverseSolver


def _chunk(q, k, G, c, scale, acc):
    """q (times ``scale``; None if q is), k and the masks of one chunk from its blocks."""
    q = None if q is None else q.astype(acc) * jnp.asarray(scale, acc)
    return q, k.astype(acc), cm.masks(plc.column(G).astype(acc), plc.column(c))


# ----------------------------------------------------------------------------------------------------------
# Kernels.


def _wy_kernel(k_ref, v_ref, beta_ref, G_ref, c_ref, W_ref, Ubar_ref, *, acc):
    _, k, m = _chunk(None, k_ref[...], G_ref[...], c_ref[...], 1.0, acc)
    beta = plc.column(beta_ref[...]).astype(acc)
    it = cm.intra(k, k, beta, m, SOLVER, True, need_output=False)
    W, Ubar = cm.wy(k, v_ref[...].astype(acc), beta, it, m, SOLVER)
    W_ref[...], Ubar_ref[...] = W, Ubar


def _states_step(xs, carry, *, delta, acc):
    """One chunk of the state pass: store the incoming state (and U), carry the outgoing one."""
    (S,) = carry
    if delta:
        k, W, Ubar, G, c = xs
        U = Ubar - cm.dot(W, S)
    else:
        k, U, G, c = xs
        U = U.astype(acc)
    _, k, m = _chunk(None, k, G, c, 1.0, acc)
    return (cm.chunk_state(S, k, U, m),), [S, U] if delta else [S]


def _output_kernel(q_ref, k_ref, U_ref, G_ref, c_ref, S_ref, o_ref, *, scale, acc):
    q, k, m = _chunk(q_ref[...], k_ref[...], G_ref[...], c_ref[...], scale, acc)
    it = cm.intra(q, k, None, m, SOLVER, False)
    o_ref[...] = cm.chunk_output(S_ref[...], q, U_ref[...].astype(acc), it, m).astype(o_ref.dtype)


def _dstates_step(xs, carry, *, scale, delta, acc):
    """One chunk of the reverse pass: store the outgoing state's cotangent, carry the incoming one's."""
    (dS1,) = carry
    q, k, W, dO, G, c = xs if delta else (xs[0], xs[1], None, *xs[2:])
    q, k, m = _chunk(q, k, G, c, scale, acc)
    P = cm.intra(q, k, None, m, SOLVER, False).P
    return (cm.state_cotangent(q, k, W, dS1, dO.astype(acc), m, P),), [dS1]


def _grads_kernel(*refs, scale, delta, acc):
    if delta:
        q_ref, k_ref, v_ref, beta_ref, G_ref, c_ref, U_ref, S0_ref, dS1_ref, do_ref = refs[:10]
        dq_ref, dk_ref, dv_ref, db_ref, dG_ref = refs[10:]
    else:
        q_ref, k_ref, v_ref, G_ref, c_ref, S0_ref, dS1_ref, do_ref = refs[:8]
        dq_ref, dk_ref, dv_ref, dG_ref = refs[8:]
    q, k, m = _chunk(q_ref[...], k_ref[...], G_ref[...], c_ref[...], scale, acc)
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
    delta = wy is not None
    tile = plc.Rows(V, True)
    ins = [(k, plc.Rows(K))] + ([(wy[0], plc.Rows(K)), (wy[1], tile)] if delta else [(v, tile)])
    outs = [((B, H, N, K, V), acc, plc.Stack(K, V, True))] + ([((B, H, Tp, V), acc, tile)] if delta else [])
    res = plc.sequential(
        partial(_states_step, delta=delta, acc=acc),
        ins + [(G, plc.Rows(1)), (c, plc.Rows(1))],
        [h0],
        outs,
        C=C,
        tiled_carry=True,
        reverse=False,
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
    V, acc, N = do.shape[-1], acc_dtype(q.dtype), Tp // C
    delta = W is not None
    ins = [(q, plc.Rows(K)), (k, plc.Rows(K))] + ([(W, plc.Rows(K))] if delta else [])
    return plc.sequential(
        partial(_dstates_step, scale=scale, delta=delta, acc=acc),
        ins + [(do, plc.Rows(V, True)), (G, plc.Rows(1)), (c, plc.Rows(1))],
        [dhT],
        [((B, H, N, K, V), acc, plc.Stack(K, V, True))],
        C=C,
        tiled_carry=True,
        reverse=True,
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
    T, K, V = q.shape[1], q.shape[3], v.shape[-1]

    def build(kind):
        def run(q, k, v, beta, g, h0, segment_ids):
            C, Kp, Vp, how = plc.kernel_dims(kind, T, K, V, chunk_size)
            p = cm.prepare(q, k, v, beta if delta else None, g, h0, segment_ids, C)
            h0 = plc.pad_features(plc.pad_features(p.h0, Vp), Kp, axis=-2)
            qkv = plc.to_kernel(p.q, Kp), plc.to_kernel(p.k, Kp), plc.to_kernel(p.v, Vp)
            gates = map(plc.to_kernel, (p.beta, p.G, p.c))
            o, hT = _core(*qkv, *gates, h0, scale=float(scale), C=C, how=how)
            return plc.time_major(o)[:, :T, :, :V], hT[..., :K, :V]

        return run

    plc.check_tuning(V)
    return plc.per_platform(build, (q, k, v, beta, g, initial_state, segment_ids), interpret)
