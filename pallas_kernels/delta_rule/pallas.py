"""Pallas kernels for the delta-rule family: a fused forward kernel and a fused backward kernel, each with
one program per (batch, head) that walks the chunks sequentially, carrying the [K, V] state (forward) or its
cotangent (backward, in reverse). The per-chunk math is ``chunk_math`` (shared with the pure-JAX chunked
backend) and the grid plumbing is ``_common/pallas.py``; only this op's data movement lives here.

The backward pass first re-runs the forward kernel in "states" mode to recompute the per-chunk incoming
states (nothing per token is stored between forward and backward), then runs the reverse kernel.

On CPU the kernels run with ``interpret=True`` (slow, for testing). On NVIDIA GPUs they lower through Triton;
the kernels only use loads/stores of [C, D] blocks at dynamic offsets, 2-D dots, iota masks, reductions and
a ``fori_loop`` (the (I + A)^-1 factor is formed by masked row-wise forward substitution), which that lowering
supports; they have NOT been run on a GPU in this repository yet (see BENCHMARKS.md).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from .._common import pallas as plc
from .._common.vjp import recompute_vjp
from . import chunk_math as cm

SOLVER = cm.InverseSolver


# ----------------------------------------------------------------------------------------------------------
# Forward kernel.


def _fwd_kernel(*refs, scale, C, NC, delta, acc, emit_out, emit_states):
    refs = list(refs)
    q_ref, k_ref, v_ref = refs[:3]
    beta_ref = refs[3] if delta else None
    G_ref, c_ref, h0_ref = refs[3 + delta : 6 + delta]
    outs = refs[6 + delta :]
    o_ref = outs.pop(0) if emit_out else None
    hT_ref = outs.pop(0)
    st_ref = outs.pop(0) if emit_states else None

    def body(n, S):
        sl = pl.ds(n * C, C)
        q, k, v, beta, G, c = plc.load_chunk(sl, q_ref, k_ref, v_ref, beta_ref, G_ref, c_ref, scale, acc)
        m = cm.masks(G, c)
        it = cm.intra(q, k, beta, m, SOLVER, delta, need_output=emit_out)
        U = cm.chunk_update(S, k, v, beta, it, m, SOLVER, delta)
        if emit_out:
            o_ref[sl, :] = cm.chunk_output(S, q, U, it, m).astype(o_ref.dtype)
        if emit_states:
            st_ref[n, :, :] = S
        return cm.chunk_state(S, k, U, m)

    hT_ref[...] = lax.fori_loop(0, NC, body, h0_ref[...].astype(acc))


def _fwd_call(q, k, v, beta, G, c, h0, *, scale, C, delta, interpret, emit_out, emit_states):
    B, Tp, H, K, V, NC, acc = plc.geometry(q, v, C)
    tok, scal, state, states = plc.specs(Tp, K, V, NC)
    ins = [q, k, v] + ([beta] if delta else []) + [G, c, h0]
    in_specs = [tok(K), tok(K), tok(V)] + ([scal] if delta else []) + [scal, scal, state]
    outs, out_specs = [], []
    if emit_out:
        outs.append(((B, Tp, H, V), q.dtype))
        out_specs.append(tok(V))
    outs.append(((B, H, K, V), acc))
    out_specs.append(state)
    if emit_states:
        outs.append(((B, H, NC, K, V), acc))
        out_specs.append(states)
    kernel = partial(
        _fwd_kernel, scale=scale, C=C, NC=NC, delta=delta, acc=acc, emit_out=emit_out, emit_states=emit_states
    )
    return plc.call(kernel, ins, in_specs, outs, out_specs, grid=(B, H), interpret=interpret, name="delta_rule_fwd")


# ----------------------------------------------------------------------------------------------------------
# Backward kernel.


def _bwd_kernel(*refs, scale, C, NC, delta, acc):
    refs = list(refs)
    q_ref, k_ref, v_ref = refs[:3]
    beta_ref = refs[3] if delta else None
    G_ref, c_ref, st_ref, do_ref, dhT_ref = refs[3 + delta : 8 + delta]
    outs = refs[8 + delta :]
    dq_ref, dk_ref, dv_ref = outs[:3]
    db_ref = outs[3] if delta else None
    dG_ref, dh0_ref = outs[3 + delta :]

    def body(i, dS1):
        n = NC - 1 - i
        sl = pl.ds(n * C, C)
        q, k, v, beta, G, c = plc.load_chunk(sl, q_ref, k_ref, v_ref, beta_ref, G_ref, c_ref, scale, acc)
        dO = do_ref[sl, :].astype(acc)
        S0 = st_ref[n, :, :]
        m = cm.masks(G, c)
        it = cm.intra(q, k, beta, m, SOLVER, delta, need_output=False)
        U = cm.chunk_update(S0, k, v, beta, it, m, SOLVER, delta)
        QK, KK = cm.gram(q, k, delta)
        dS0, dq, dk, dv, db, dG = cm.chunk_backward(q, k, v, beta, S0, dS1, dO, U, it.fac, QK, KK, m, SOLVER, delta)
        dq_ref[sl, :] = (dq * jnp.asarray(scale, acc)).astype(dq_ref.dtype)
        dk_ref[sl, :] = dk.astype(dk_ref.dtype)
        dv_ref[sl, :] = dv.astype(dv_ref.dtype)
        if delta:
            db_ref[sl] = db.astype(db_ref.dtype)
        dG_ref[sl] = dG.astype(dG_ref.dtype)
        return dS0

    dh0_ref[...] = lax.fori_loop(0, NC, body, dhT_ref[...].astype(acc))


def _bwd_call(q, k, v, beta, G, c, states, do, dhT, *, scale, C, delta, interpret):
    B, Tp, H, K, V, NC, acc = plc.geometry(q, v, C)
    tok, scal, state, st = plc.specs(Tp, K, V, NC)
    ins = [q, k, v] + ([beta] if delta else []) + [G, c, states, do, dhT]
    in_specs = [tok(K), tok(K), tok(V)] + ([scal] if delta else []) + [scal, scal, st, tok(V), state]
    outs = [(q.shape, q.dtype), (k.shape, k.dtype), (v.shape, v.dtype)]
    out_specs = [tok(K), tok(K), tok(V)]
    if delta:
        outs.append((beta.shape, beta.dtype))
        out_specs.append(scal)
    outs += [(G.shape, G.dtype), ((B, H, K, V), acc)]
    out_specs += [scal, state]
    kernel = partial(_bwd_kernel, scale=scale, C=C, NC=NC, delta=delta, acc=acc)
    return plc.call(kernel, ins, in_specs, outs, out_specs, grid=(B, H), interpret=interpret, name="delta_rule_bwd")


# ----------------------------------------------------------------------------------------------------------
# Differentiation (the custom_vjp itself is _common/vjp.py's).


def _forward(q, k, v, beta, G, c, h0, *, scale, C, delta, interpret):
    o, hT = _fwd_call(
        q, k, v, beta, G, c, h0, scale=scale, C=C, delta=delta, interpret=interpret, emit_out=True, emit_states=False
    )
    return o, hT


def _backward(res, cts, *, scale, C, delta, interpret):
    q, k, v, beta, G, c, h0 = res
    do, dhT = cts
    _, states = _fwd_call(
        q, k, v, beta, G, c, h0, scale=scale, C=C, delta=delta, interpret=interpret, emit_out=False, emit_states=True
    )
    outs = _bwd_call(
        q, k, v, beta, G, c, states, do, dhT.astype(h0.dtype), scale=scale, C=C, delta=delta, interpret=interpret
    )
    dq, dk, dv = outs[:3]
    db = outs[3] if delta else None
    dG, dh0 = outs[3 + delta :]
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
    """Pallas backend entry point; same contract as :func:`.reference.recurrent_reference`. ``interpret``
    defaults to True everywhere except on GPU."""
    T = q.shape[1]
    interpret, C = plc.interpret_and_chunk(interpret, T, chunk_size)
    p = cm.prepare(q, k, v, beta, g, initial_state, segment_ids, C)
    o, hT = _core(p.q, p.k, p.v, p.beta, p.G, p.c, p.h0, scale=float(scale), C=C, delta=delta, interpret=interpret)
    return o[:, :T], hT
