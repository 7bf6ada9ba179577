"""Pallas kernels for the delta-rule family: a fused forward kernel and a fused backward kernel, each with
one program per (batch, head) that walks the chunks sequentially, carrying the [K, V] state (forward) or its
cotangent (backward, in reverse). The per-chunk math is shared with the pure-JAX chunked backend
(``_chunk_math``); only data movement lives here.

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

from . import _chunk_math as cm
from ._checks import acc_dtype
from ._chunking import effective_chunk
from ._prep import prepare
from ._vma import cotangents_like, match_vma, out_struct

SOLVER = cm.InverseSolver


def _on_gpu() -> bool:
    return jax.default_backend() in ("gpu", "cuda", "rocm")


def _compiler_params(interpret: bool):
    if interpret:
        return None
    from jax.experimental.pallas import triton as plgpu

    return plgpu.CompilerParams(num_warps=4, num_stages=1)


def _geometry(q, v, C):
    """(B, padded T, H, K, V, number of chunks, accumulation dtype) of a call's inputs."""
    B, Tp, H, K = q.shape
    return B, Tp, H, K, v.shape[-1], Tp // C, acc_dtype(q.dtype)


def _specs(B, Tp, H, K, V, NC):
    tok = lambda D: pl.BlockSpec((None, Tp, None, D), lambda b, h: (b, 0, h, 0))
    scal = pl.BlockSpec((None, Tp, None), lambda b, h: (b, 0, h))
    state = pl.BlockSpec((None, None, K, V), lambda b, h: (b, h, 0, 0))
    states = pl.BlockSpec((None, None, NC, K, V), lambda b, h: (b, h, 0, 0, 0))
    return tok, scal, state, states


def _load_chunk(sl, q_ref, k_ref, v_ref, beta_ref, G_ref, c_ref, scale, acc):
    q = q_ref[sl, :].astype(acc) * jnp.asarray(scale, acc)
    k = k_ref[sl, :].astype(acc)
    v = v_ref[sl, :].astype(acc)
    beta = None if beta_ref is None else beta_ref[sl].astype(acc)
    return q, k, v, beta, G_ref[sl].astype(acc), c_ref[sl]


# ----------------------------------------------------------------------------------------------------------
# Forward kernel.


def _fwd_kernel(*refs, scale, C, NC, delta, acc, emit_out, emit_states):
    refs = list(refs)
    q_ref, k_ref, v_ref = refs[:3]
    beta_ref = refs[3] if delta else None
    G_ref, c_ref, h0_ref = refs[3 + delta:6 + delta]
    outs = refs[6 + delta:]
    o_ref = outs.pop(0) if emit_out else None
    hT_ref = outs.pop(0)
    st_ref = outs.pop(0) if emit_states else None

    def body(n, S):
        sl = pl.ds(n * C, C)
        q, k, v, beta, G, c = _load_chunk(sl, q_ref, k_ref, v_ref, beta_ref, G_ref, c_ref, scale, acc)
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
    B, Tp, H, K, V, NC, acc = _geometry(q, v, C)
    tok, scal, state, states = _specs(B, Tp, H, K, V, NC)
    ins = [q, k, v] + ([beta] if delta else []) + [G, c, h0]
    ins = [match_vma(x, *ins) for x in ins]
    in_specs = [tok(K), tok(K), tok(V)] + ([scal] if delta else []) + [scal, scal, state]
    out_shape, out_specs = [], []
    if emit_out:
        out_shape.append(out_struct((B, Tp, H, V), q.dtype, ins[0]))
        out_specs.append(tok(V))
    out_shape.append(out_struct((B, H, K, V), acc, ins[0]))
    out_specs.append(state)
    if emit_states:
        out_shape.append(out_struct((B, H, NC, K, V), acc, ins[0]))
        out_specs.append(states)
    kernel = partial(_fwd_kernel, scale=scale, C=C, NC=NC, delta=delta, acc=acc, emit_out=emit_out,
                     emit_states=emit_states)
    return pl.pallas_call(
        kernel, out_shape=out_shape, grid=(B, H), in_specs=in_specs, out_specs=out_specs,
        interpret=interpret, compiler_params=_compiler_params(interpret), name="delta_rule_fwd",
    )(*ins)


# ----------------------------------------------------------------------------------------------------------
# Backward kernel.


def _bwd_kernel(*refs, scale, C, NC, delta, acc):
    refs = list(refs)
    q_ref, k_ref, v_ref = refs[:3]
    beta_ref = refs[3] if delta else None
    G_ref, c_ref, st_ref, do_ref, dhT_ref = refs[3 + delta:8 + delta]
    outs = refs[8 + delta:]
    dq_ref, dk_ref, dv_ref = outs[:3]
    db_ref = outs[3] if delta else None
    dG_ref, dh0_ref = outs[3 + delta:]

    def body(i, dS1):
        n = NC - 1 - i
        sl = pl.ds(n * C, C)
        q, k, v, beta, G, c = _load_chunk(sl, q_ref, k_ref, v_ref, beta_ref, G_ref, c_ref, scale, acc)
        dO = do_ref[sl, :].astype(acc)
        S0 = st_ref[n, :, :]
        m = cm.masks(G, c)
        it = cm.intra(q, k, beta, m, SOLVER, delta, need_output=False)
        U = cm.chunk_update(S0, k, v, beta, it, m, SOLVER, delta)
        QK, KK = cm.gram(q, k, delta)
        dS0, dq, dk, dv, db, dG = cm.chunk_backward(q, k, v, beta, S0, dS1, dO, U, it.fac, QK, KK, m, SOLVER,
                                                    delta)
        dq_ref[sl, :] = (dq * jnp.asarray(scale, acc)).astype(dq_ref.dtype)
        dk_ref[sl, :] = dk.astype(dk_ref.dtype)
        dv_ref[sl, :] = dv.astype(dv_ref.dtype)
        if delta:
            db_ref[sl] = db.astype(db_ref.dtype)
        dG_ref[sl] = dG.astype(dG_ref.dtype)
        return dS0

    dh0_ref[...] = lax.fori_loop(0, NC, body, dhT_ref[...].astype(acc))


def _bwd_call(q, k, v, beta, G, c, states, do, dhT, *, scale, C, delta, interpret):
    B, Tp, H, K, V, NC, acc = _geometry(q, v, C)
    tok, scal, state, st = _specs(B, Tp, H, K, V, NC)
    ins = [q, k, v] + ([beta] if delta else []) + [G, c, states, do, dhT]
    ins = [match_vma(x, *ins) for x in ins]
    in_specs = [tok(K), tok(K), tok(V)] + ([scal] if delta else []) + [scal, scal, st, tok(V), state]
    out_shape = [out_struct(q.shape, q.dtype, ins[0]), out_struct(k.shape, k.dtype, ins[0]),
                 out_struct(v.shape, v.dtype, ins[0])]
    out_specs = [tok(K), tok(K), tok(V)]
    if delta:
        out_shape.append(out_struct(beta.shape, beta.dtype, ins[0]))
        out_specs.append(scal)
    out_shape += [out_struct(G.shape, G.dtype, ins[0]), out_struct((B, H, K, V), acc, ins[0])]
    out_specs += [scal, state]
    kernel = partial(_bwd_kernel, scale=scale, C=C, NC=NC, delta=delta, acc=acc)
    return pl.pallas_call(
        kernel, out_shape=out_shape, grid=(B, H), in_specs=in_specs, out_specs=out_specs,
        interpret=interpret, compiler_params=_compiler_params(interpret), name="delta_rule_bwd",
    )(*ins)


# ----------------------------------------------------------------------------------------------------------
# custom_vjp glue.


@partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9, 10))
def pallas_core(q, k, v, beta, G, c, h0, scale, C, delta, interpret):
    o, hT = _fwd_call(q, k, v, beta, G, c, h0, scale=scale, C=C, delta=delta, interpret=interpret,
                      emit_out=True, emit_states=False)
    return o, hT


def _core_fwd(q, k, v, beta, G, c, h0, scale, C, delta, interpret):
    return pallas_core(q, k, v, beta, G, c, h0, scale, C, delta, interpret), (q, k, v, beta, G, c, h0)


def _core_bwd(scale, C, delta, interpret, res, cts):
    q, k, v, beta, G, c, h0 = res
    do, dhT = cts
    _, states = _fwd_call(q, k, v, beta, G, c, h0, scale=scale, C=C, delta=delta, interpret=interpret,
                          emit_out=False, emit_states=True)
    outs = _bwd_call(q, k, v, beta, G, c, states, do, dhT.astype(h0.dtype), scale=scale, C=C, delta=delta,
                     interpret=interpret)
    dq, dk, dv = outs[:3]
    db = outs[3] if delta else None
    dG, dh0 = outs[3 + delta:]
    return cotangents_like((dq, dk, dv, db, dG, None, dh0), res)


pallas_core.defvjp(_core_fwd, _core_bwd)


def pallas_chunked(q, k, v, beta, g, *, scale, initial_state, segment_ids, chunk_size, delta: bool,
                   interpret: bool | None = None):
    """Pallas backend entry point; same contract as ``reference.recurrent_reference``. ``interpret``
    defaults to True everywhere except on GPU."""
    if interpret is None:
        interpret = not _on_gpu()
    T = q.shape[1]
    C = effective_chunk(T, chunk_size, multiple=1 if interpret else 16)
    p = prepare(q, k, v, beta, g, initial_state, segment_ids, C)
    o, hT = pallas_core(p.q, p.k, p.v, p.beta, p.G, p.c, p.h0, float(scale), C, delta, bool(interpret))
    return o[:, :T], hT
