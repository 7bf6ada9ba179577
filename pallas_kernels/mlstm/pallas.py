"""Pallas kernels for the mLSTM: a fused forward and a fused backward kernel with one program per (batch, head)
that walks the chunks sequentially, carrying the stabilised state (C, n, m) forward or its cotangent in
reverse. The per-chunk math is ``chunk_math`` (shared with the pure-JAX chunked backend) and the grid plumbing
is ``_common/pallas.py`` (shared with the delta-rule kernels); only this op's data movement lives here.

As for the delta rule, the backward pass first re-runs the forward kernel in "states" mode to recompute the
per-chunk incoming states. The scalar stabiliser m travels as a length-1 block. On CPU the kernels run with
``interpret=True``; the GPU (Triton) lowering has not been run in this repository yet.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from .._common import pallas as plc
from .._common.vjp import recompute_vjp
from . import chunk_math as mm


def _state_specs(K, NC):
    """BlockSpecs of n [B, H, K], m [B, H, 1] and their per-chunk stacks [B, H, NC, K], [B, H, NC]."""
    n = pl.BlockSpec((None, None, K), lambda b, h: (b, h, 0))
    m = pl.BlockSpec((None, None, 1), lambda b, h: (b, h, 0))
    ns = pl.BlockSpec((None, None, NC, K), lambda b, h: (b, h, 0, 0))
    ms = pl.BlockSpec((None, None, NC), lambda b, h: (b, h, 0))
    return n, m, ns, ms


def _read_state(C_ref, n_ref, m_ref, acc) -> mm.State:
    return mm.State(C_ref[...].astype(acc), n_ref[...].astype(acc), jnp.reshape(m_ref[...], ()).astype(acc))


def _write_state(refs, s: mm.State) -> None:
    C_ref, n_ref, m_ref = refs
    C_ref[...], n_ref[...], m_ref[...] = s.C, s.n, jnp.reshape(s.m, (1,))


# ----------------------------------------------------------------------------------------------------------
# Forward kernel.


def _fwd_kernel(
    q_ref,
    k_ref,
    v_ref,
    i_ref,
    G_ref,
    c_ref,
    C0_ref,
    n0_ref,
    m0_ref,
    *outs,
    scale,
    C,
    NC,
    eps,
    acc,
    emit_out,
    emit_states,
):
    outs = list(outs)
    h_ref = outs.pop(0) if emit_out else None
    final, per_chunk = outs[:3], outs[3:]

    def body(j, s):
        s = mm.State(*s)
        sl = pl.ds(j * C, C)
        q, k, v, ig, G, c = plc.load_chunk(sl, q_ref, k_ref, v_ref, i_ref, G_ref, c_ref, scale, acc)
        if emit_out:
            h_ref[sl, :] = mm.chunk_output(q, k, v, ig, G, c, s, eps).astype(h_ref.dtype)
        if emit_states:
            stC_ref, stn_ref, stm_ref = per_chunk
            stC_ref[j, :, :] = s.C
            stn_ref[j, :] = s.n
            stm_ref[pl.ds(j, 1)] = jnp.reshape(s.m, (1,))
        return tuple(mm.chunk_state(k, v, ig, G, c, s))

    _write_state(final, mm.State(*lax.fori_loop(0, NC, body, tuple(_read_state(C0_ref, n0_ref, m0_ref, acc)))))


def _fwd_call(q, k, v, ig, G, c, s0, *, scale, C, eps, interpret, emit_out, emit_states):
    B, Tp, H, K, V, NC, acc = plc.geometry(q, v, C)
    tok, scal, st, sts = plc.specs(Tp, K, V, NC)
    stn, stm, stns, stms = _state_specs(K, NC)
    ins = [q, k, v, ig, G, c, s0.C, s0.n, s0.m[..., None]]
    outs, out_specs = [], []
    if emit_out:
        outs.append(((B, Tp, H, V), q.dtype))
        out_specs.append(tok(V))
    outs += [(s, acc) for s in ((B, H, K, V), (B, H, K), (B, H, 1))]
    out_specs += [st, stn, stm]
    if emit_states:
        outs += [(s, acc) for s in ((B, H, NC, K, V), (B, H, NC, K), (B, H, NC))]
        out_specs += [sts, stns, stms]
    kernel = partial(_fwd_kernel, scale=scale, C=C, NC=NC, eps=eps, acc=acc, emit_out=emit_out, emit_states=emit_states)
    outs = list(
        plc.call(
            kernel,
            ins,
            [tok(K), tok(K), tok(V), scal, scal, scal, st, stn, stm],
            outs,
            out_specs,
            grid=(B, H),
            interpret=interpret,
            name="mlstm_fwd",
        )
    )
    h = outs.pop(0) if emit_out else None
    CT, nT, mT = outs[:3]
    return h, mm.State(CT, nT, mT[..., 0]), (mm.State(*outs[3:]) if emit_states else None)


# ----------------------------------------------------------------------------------------------------------
# Backward kernel.


def _bwd_kernel(
    q_ref,
    k_ref,
    v_ref,
    i_ref,
    G_ref,
    c_ref,
    stC_ref,
    stn_ref,
    stm_ref,
    dh_ref,
    dC_ref,
    dn_ref,
    dm_ref,
    dq_ref,
    dk_ref,
    dv_ref,
    di_ref,
    dG_ref,
    dC0_ref,
    dn0_ref,
    dm0_ref,
    *,
    scale,
    C,
    NC,
    eps,
    acc,
):
    def body(r, ds):
        j = NC - 1 - r
        sl = pl.ds(j * C, C)
        q, k, v, ig, G, c = plc.load_chunk(sl, q_ref, k_ref, v_ref, i_ref, G_ref, c_ref, scale, acc)
        s = mm.State(stC_ref[j, :, :], stn_ref[j, :], jnp.reshape(stm_ref[pl.ds(j, 1)], ()))
        dh = dh_ref[sl, :].astype(acc)
        dq, dk, dv, dig, dG, ds0 = mm.chunk_backward(q, k, v, ig, G, c, s, dh, mm.State(*ds), eps)
        dq_ref[sl, :] = (dq * jnp.asarray(scale, acc)).astype(dq_ref.dtype)
        dk_ref[sl, :] = dk.astype(dk_ref.dtype)
        dv_ref[sl, :] = dv.astype(dv_ref.dtype)
        di_ref[sl] = dig.astype(di_ref.dtype)
        dG_ref[sl] = dG.astype(dG_ref.dtype)
        return tuple(ds0)

    ds0 = lax.fori_loop(0, NC, body, tuple(_read_state(dC_ref, dn_ref, dm_ref, acc)))
    _write_state((dC0_ref, dn0_ref, dm0_ref), mm.State(*ds0))


def _bwd_call(q, k, v, ig, G, c, states, dh, dsT, *, scale, C, eps, interpret):
    B, Tp, H, K, V, NC, acc = plc.geometry(q, v, C)
    tok, scal, st, sts = plc.specs(Tp, K, V, NC)
    stn, stm, stns, stms = _state_specs(K, NC)
    ins = [q, k, v, ig, G, c, *states, dh, dsT.C, dsT.n, dsT.m[..., None]]
    outs = [(x.shape, x.dtype) for x in (q, k, v, ig, G)]
    outs += [(s, acc) for s in ((B, H, K, V), (B, H, K), (B, H, 1))]
    kernel = partial(_bwd_kernel, scale=scale, C=C, NC=NC, eps=eps, acc=acc)
    outs = plc.call(
        kernel,
        ins,
        [tok(K), tok(K), tok(V), scal, scal, scal, sts, stns, stms, tok(V), st, stn, stm],
        outs,
        [tok(K), tok(K), tok(V), scal, scal, st, stn, stm],
        grid=(B, H),
        interpret=interpret,
        name="mlstm_bwd",
    )
    dC0, dn0, dm0 = outs[5:]
    return (*outs[:5], mm.State(dC0, dn0, dm0[..., 0]))


# ----------------------------------------------------------------------------------------------------------
# Differentiation (the custom_vjp itself is _common/vjp.py's).


def _forward(q, k, v, ig, G, c, s0, *, scale, C, eps, interpret):
    h, sT, _ = _fwd_call(
        q, k, v, ig, G, c, s0, scale=scale, C=C, eps=eps, interpret=interpret, emit_out=True, emit_states=False
    )
    return h, sT


def _backward(res, cts, *, scale, C, eps, interpret):
    q, k, v, ig, G, c, s0 = res
    dh, dsT = cts
    _, _, states = _fwd_call(
        q, k, v, ig, G, c, s0, scale=scale, C=C, eps=eps, interpret=interpret, emit_out=False, emit_states=True
    )
    dsT = mm.State(*(x.astype(y.dtype) for x, y in zip(dsT, s0, strict=True)))
    dq, dk, dv, dig, dG, ds0 = _bwd_call(
        q, k, v, ig, G, c, states, dh, dsT, scale=scale, C=C, eps=eps, interpret=interpret
    )
    return dq, dk, dv, dig, dG, None, ds0


_core = recompute_vjp(_forward, _backward)


def mlstm_pallas(
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
    interpret: bool | None = None,
) -> tuple[jax.Array, mm.State]:
    """Pallas backend entry point; same contract as :func:`.reference.mlstm_reference`. ``interpret``
    defaults to True everywhere except on GPU."""
    T, K = q.shape[1], q.shape[3]
    interpret, C = plc.interpret_and_chunk(interpret, T, chunk_size)
    p = mm.prepare(q, k, v, i, f, initial_state, segment_ids, C)
    h, sT = _core(p.q, p.k, p.v, p.ig, p.G, p.c, p.s0, scale=K**-0.5, C=C, eps=float(eps), interpret=interpret)
    return h[:, :T], sT
