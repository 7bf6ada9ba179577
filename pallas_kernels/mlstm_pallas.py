"""Pallas kernels for the mLSTM: a fused forward and a fused backward kernel with one program per (batch, head)
that walks the chunks sequentially, carrying the stabilised state (C, n, m) forward or its cotangent in
reverse. The per-chunk math is ``_mlstm_math`` (shared with the pure-JAX chunked backend) and the data
movement helpers are the delta-rule kernels' (``pallas_delta``).

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

from . import _mlstm_math as mm
from ._chunking import effective_chunk
from ._mlstm_prep import prepare
from ._vma import cotangents_like, match_vma, out_struct
from .pallas_delta import _compiler_params, _geometry, _load_chunk, _on_gpu, _specs


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


def _fwd_kernel(q_ref, k_ref, v_ref, i_ref, G_ref, c_ref, C0_ref, n0_ref, m0_ref, *outs, scale, C, NC, eps, acc,
                emit_out, emit_states):
    outs = list(outs)
    h_ref = outs.pop(0) if emit_out else None
    final, per_chunk = outs[:3], outs[3:]

    def body(j, s):
        s = mm.State(*s)
        sl = pl.ds(j * C, C)
        q, k, v, ig, G, c = _load_chunk(sl, q_ref, k_ref, v_ref, i_ref, G_ref, c_ref, scale, acc)
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
    B, Tp, H, K, V, NC, acc = _geometry(q, v, C)
    tok, scal, st, sts = _specs(B, Tp, H, K, V, NC)
    stn, stm, stns, stms = _state_specs(K, NC)
    ins = [q, k, v, ig, G, c, s0.C, s0.n, s0.m[..., None]]
    ins = [match_vma(x, *ins) for x in ins]
    like = ins[0]
    out_shape, out_specs = [], []
    if emit_out:
        out_shape.append(out_struct((B, Tp, H, V), q.dtype, like))
        out_specs.append(tok(V))
    out_shape += [out_struct(s, acc, like) for s in ((B, H, K, V), (B, H, K), (B, H, 1))]
    out_specs += [st, stn, stm]
    if emit_states:
        out_shape += [out_struct(s, acc, like) for s in ((B, H, NC, K, V), (B, H, NC, K), (B, H, NC))]
        out_specs += [sts, stns, stms]
    kernel = partial(_fwd_kernel, scale=scale, C=C, NC=NC, eps=eps, acc=acc, emit_out=emit_out,
                     emit_states=emit_states)
    outs = list(pl.pallas_call(
        kernel, out_shape=out_shape, grid=(B, H),
        in_specs=[tok(K), tok(K), tok(V), scal, scal, scal, st, stn, stm], out_specs=out_specs,
        interpret=interpret, compiler_params=_compiler_params(interpret), name="mlstm_fwd",
    )(*ins))
    h = outs.pop(0) if emit_out else None
    CT, nT, mT = outs[:3]
    return h, mm.State(CT, nT, mT[..., 0]), (mm.State(*outs[3:]) if emit_states else None)


# ----------------------------------------------------------------------------------------------------------
# Backward kernel.


def _bwd_kernel(q_ref, k_ref, v_ref, i_ref, G_ref, c_ref, stC_ref, stn_ref, stm_ref, dh_ref, dC_ref, dn_ref,
                dm_ref, dq_ref, dk_ref, dv_ref, di_ref, dG_ref, dC0_ref, dn0_ref, dm0_ref, *, scale, C, NC, eps, acc):
    def body(r, ds):
        j = NC - 1 - r
        sl = pl.ds(j * C, C)
        q, k, v, ig, G, c = _load_chunk(sl, q_ref, k_ref, v_ref, i_ref, G_ref, c_ref, scale, acc)
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
    B, Tp, H, K, V, NC, acc = _geometry(q, v, C)
    tok, scal, st, sts = _specs(B, Tp, H, K, V, NC)
    stn, stm, stns, stms = _state_specs(K, NC)
    ins = [q, k, v, ig, G, c, *states, dh, dsT.C, dsT.n, dsT.m[..., None]]
    ins = [match_vma(x, *ins) for x in ins]
    like = ins[0]
    out_shape = [out_struct(x.shape, x.dtype, like) for x in (q, k, v, ig, G)]
    out_shape += [out_struct(s, acc, like) for s in ((B, H, K, V), (B, H, K), (B, H, 1))]
    kernel = partial(_bwd_kernel, scale=scale, C=C, NC=NC, eps=eps, acc=acc)
    outs = pl.pallas_call(
        kernel, out_shape=out_shape, grid=(B, H),
        in_specs=[tok(K), tok(K), tok(V), scal, scal, scal, sts, stns, stms, tok(V), st, stn, stm],
        out_specs=[tok(K), tok(K), tok(V), scal, scal, st, stn, stm],
        interpret=interpret, compiler_params=_compiler_params(interpret), name="mlstm_bwd",
    )(*ins)
    dC0, dn0, dm0 = outs[5:]
    return (*outs[:5], mm.State(dC0, dn0, dm0[..., 0]))


# ----------------------------------------------------------------------------------------------------------
# custom_vjp glue.


@partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9, 10))
def mlstm_pallas_core(q, k, v, ig, G, c, s0, scale, C, eps, interpret):
    h, sT, _ = _fwd_call(q, k, v, ig, G, c, s0, scale=scale, C=C, eps=eps, interpret=interpret, emit_out=True,
                         emit_states=False)
    return h, sT


def _core_fwd(q, k, v, ig, G, c, s0, scale, C, eps, interpret):
    return mlstm_pallas_core(q, k, v, ig, G, c, s0, scale, C, eps, interpret), (q, k, v, ig, G, c, s0)


def _core_bwd(scale, C, eps, interpret, res, cts):
    q, k, v, ig, G, c, s0 = res
    dh, dsT = cts
    _, _, states = _fwd_call(q, k, v, ig, G, c, s0, scale=scale, C=C, eps=eps, interpret=interpret,
                             emit_out=False, emit_states=True)
    dsT = mm.State(*(x.astype(y.dtype) for x, y in zip(dsT, s0)))
    dq, dk, dv, dig, dG, ds0 = _bwd_call(q, k, v, ig, G, c, states, dh, dsT, scale=scale, C=C, eps=eps,
                                         interpret=interpret)
    return *cotangents_like((dq, dk, dv, dig, dG, None), res[:6]), mm.State(*cotangents_like(ds0, s0))


mlstm_pallas_core.defvjp(_core_fwd, _core_bwd)


def mlstm_pallas(q, k, v, i, f, *, initial_state, segment_ids, chunk_size, eps, interpret: bool | None = None):
    """Pallas backend entry point; same contract as ``mlstm_reference.mlstm_reference``. ``interpret``
    defaults to True everywhere except on GPU."""
    if interpret is None:
        interpret = not _on_gpu()
    T, K = q.shape[1], q.shape[3]
    C = effective_chunk(T, chunk_size, multiple=1 if interpret else 16)
    p = prepare(q, k, v, i, f, initial_state, segment_ids, C)
    h, sT = mlstm_pallas_core(p.q, p.k, p.v, p.ig, p.G, p.c, p.s0, K ** -0.5, C, float(eps), bool(interpret))
    return h[:, :T], sT
