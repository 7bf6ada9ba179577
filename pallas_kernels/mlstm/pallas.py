"""Chunk-parallel Pallas kernels for the mLSTM.

Forward: ``states``, the one sequential pass (``_common/pallas.py: sequential``), carries the stabilised state
(C, n, m) through the chunks and stores each chunk's incoming state; ``output``, grid (B, H, chunk), forms every
chunk's h at once (``chunk_math.chunk_output``). Backward: ``states`` again (nothing per token is kept between
forward and backward); ``dstates``, sequential in reverse, carries the state cotangent backwards through the
chunks and stores each chunk's outgoing one; ``grads``, grid (B, H, chunk), applies ``chunk_math.chunk_backward``
to every chunk at once. The sequential passes are one program per (batch, head), not tiled over the value dim
(n and m are shared by all its columns); the reverse pass evaluates ``chunk_backward`` for the state cotangent
alone, and the compilers drop the per-token cotangents it does not store.

The normaliser n travels as a [1, K] block and the stabiliser m as a [1, 1] block (rank-2 blocks, as Mosaic
wants). Each kernel lowers as the platform wants (``_common/pallas.py``).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from .._common import pallas as plc
from .._common.checks import acc_dtype
from .._common.vjp import recompute_vjp
from . import chunk_math as mm


def _chunk(q, k, v, ig, G, c, scale, acc):
    """q (times ``scale``), k, v, input gates, G and c of one chunk from its blocks."""
    q = q.astype(acc) * jnp.asarray(scale, acc)
    ig, G = (plc.column(x).astype(acc) for x in (ig, G))
    return q, k.astype(acc), v.astype(acc), ig, G, plc.column(c)


def _read(C, n, m, acc) -> mm.State:
    """A state from its [K, V], [1, K] and [1, 1] blocks."""
    return mm.State(C.astype(acc), n[0].astype(acc), jnp.reshape(m, ()).astype(acc))


def _blocks(s: mm.State) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A state as its [K, V], [1, K] and [1, 1] blocks."""
    return s.C, s.n[None, :], jnp.reshape(s.m, (1, 1))


# ----------------------------------------------------------------------------------------------------------
# Kernels and per-chunk steps.


def _states_step(xs, carry, *, scale, acc):
    """One chunk of the state pass: store the incoming state, carry the outgoing one."""
    _, k, v, ig, G, c = _chunk(*xs, scale, acc)
    return _blocks(mm.chunk_state(k, v, ig, G, c, _read(*carry, acc))), list(carry)


def _output_kernel(q_ref, k_ref, v_ref, i_ref, G_ref, c_ref, C_ref, n_ref, m_ref, h_ref, *, scale, eps, acc):
    q, k, v, ig, G, c = _chunk(*(r[...] for r in (q_ref, k_ref, v_ref, i_ref, G_ref, c_ref)), scale, acc)
    s = _read(C_ref[...], n_ref[...], m_ref[...], acc)
    h_ref[...] = mm.chunk_output(q, k, v, ig, G, c, s, eps).astype(h_ref.dtype)


def _dstates_step(xs, carry, *, scale, eps, acc):
    """One chunk of the reverse pass: store the outgoing state's cotangent, carry the incoming one's."""
    q, k, v, ig, G, c = _chunk(*xs[:6], scale, acc)
    s = _read(*xs[6:9], acc)
    dh = xs[9].astype(acc)
    ds0 = mm.chunk_backward(q, k, v, ig, G, c, s, dh, _read(*carry, acc), eps)[-1]
    return _blocks(ds0), list(carry)


def _grads_kernel(q_ref, k_ref, v_ref, i_ref, G_ref, c_ref, *refs, scale, eps, acc):
    s_refs, dh_ref, ds_refs = refs[:3], refs[3], refs[4:7]
    dq_ref, dk_ref, dv_ref, di_ref, dG_ref = refs[7:]
    q, k, v, ig, G, c = _chunk(*(r[...] for r in (q_ref, k_ref, v_ref, i_ref, G_ref, c_ref)), scale, acc)
    s = _read(*(ref[...] for ref in s_refs), acc)
    ds = _read(*(ref[...] for ref in ds_refs), acc)
    dq, dk, dv, dig, dG, _ = mm.chunk_backward(q, k, v, ig, G, c, s, dh_ref[...].astype(acc), ds, eps)
    dq_ref[...] = (dq * jnp.asarray(scale, acc)).astype(dq_ref.dtype)
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)
    di_ref[...] = plc.as_column(dig).astype(di_ref.dtype)
    dG_ref[...] = plc.as_column(dG).astype(dG_ref.dtype)


# ----------------------------------------------------------------------------------------------------------
# Calls. Head-major arrays (``_common/pallas.py``); a state is (C [B, H, K, V], n [B, H, 1, K], m [B, H, 1, 1]),
# a stack of per-chunk states the same with an N axis after H.


def _state_blocks(K, V):
    """BlockSpecs of one chunk's state of a per-chunk stack (grid (b, h, n))."""
    return [plc.chunk_state(r, d) for r, d in ((K, V), (1, K), (1, 1))]


def _token_blocks(C, K, V):
    """BlockSpecs of one chunk of q, k, v, i, G, c (grid (b, h, n))."""
    return [plc.chunk_rows(C, D) for D in (K, K, V, 1, 1, 1)]


def _pass(step, tokens, extra, init, *, C, reverse, how, name):
    """A sequential pass over q, k, v, i, G, c (``tokens``) and ``extra`` inputs carrying a state from ``init``:
    (the state at every chunk as the step stores it, the final carry), each an ``mm.State`` of blocks."""
    q, v = tokens[0], tokens[2]
    B, H, Tp, K = q.shape
    acc = acc_dtype(q.dtype)
    stacks = [((B, H, Tp // C, r, d), acc, plc.Stack(r, d)) for r, d in ((K, v.shape[-1]), (1, K), (1, 1))]
    rows = [(x, plc.Rows(x.shape[-1])) for x in tokens]
    res = plc.sequential(
        step, rows + extra, list(init), stacks, C=C, tiled_carry=False, reverse=reverse, how=how, name=name
    )
    return mm.State(*res[:3]), mm.State(*res[3:])


def _states(q, k, v, ig, G, c, s0, *, scale, C, how):
    """(per-chunk incoming states, final state)."""
    step = partial(_states_step, scale=scale, acc=acc_dtype(q.dtype))
    return _pass(step, (q, k, v, ig, G, c), [], s0, C=C, reverse=False, how=how, name="mlstm_states")


def _output(q, k, v, ig, G, c, states, *, scale, C, eps, how):
    B, H, Tp, K = q.shape
    V = v.shape[-1]
    (h,) = plc.call(
        partial(_output_kernel, scale=scale, eps=eps, acc=acc_dtype(q.dtype)),
        [q, k, v, ig, G, c, *states],
        _token_blocks(C, K, V) + _state_blocks(K, V),
        [((B, H, Tp, V), q.dtype)],
        [plc.chunk_rows(C, V)],
        grid=(B, H, Tp // C),
        how=how,
        name="mlstm_output",
    )
    return h


def _dstates(q, k, v, ig, G, c, states, dh, dsT, *, scale, C, eps, how):
    """(cotangent of every chunk's outgoing state, cotangent of the initial state)."""
    step = partial(_dstates_step, scale=scale, eps=eps, acc=acc_dtype(q.dtype))
    extra = [(x, plc.Stack(*x.shape[-2:])) for x in states] + [(dh, plc.Rows(dh.shape[-1]))]
    return _pass(step, (q, k, v, ig, G, c), extra, dsT, C=C, reverse=True, how=how, name="mlstm_dstates")


def _grads(q, k, v, ig, G, c, states, dh, dstates, *, scale, C, eps, how):
    B, H, Tp, K = q.shape
    V = v.shape[-1]
    per_chunk = _state_blocks(K, V)
    blocks = _token_blocks(C, K, V)
    return plc.call(
        partial(_grads_kernel, scale=scale, eps=eps, acc=acc_dtype(q.dtype)),
        [q, k, v, ig, G, c, *states, dh, *dstates],
        blocks + per_chunk + [blocks[2]] + per_chunk,
        [(x.shape, x.dtype) for x in (q, k, v, ig, G)],
        blocks[:5],
        grid=(B, H, Tp // C),
        how=how,
        name="mlstm_grads",
    )


# ----------------------------------------------------------------------------------------------------------
# Differentiation (the custom_vjp itself is _common/vjp.py's). The state crosses as head-major blocks.


def _forward(q, k, v, ig, G, c, s0, *, scale, C, eps, how):
    states, sT = _states(q, k, v, ig, G, c, s0, scale=scale, C=C, how=how)
    return _output(q, k, v, ig, G, c, states, scale=scale, C=C, eps=eps, how=how), sT


def _backward(res, cts, *, scale, C, eps, how):
    q, k, v, ig, G, c, s0 = res
    dh, dsT = cts
    states, _ = _states(q, k, v, ig, G, c, s0, scale=scale, C=C, how=how)
    dsT = mm.State(*(x.astype(y.dtype) for x, y in zip(dsT, s0, strict=True)))
    dstates, ds0 = _dstates(q, k, v, ig, G, c, states, dh, dsT, scale=scale, C=C, eps=eps, how=how)
    dq, dk, dv, dig, dG = _grads(q, k, v, ig, G, c, states, dh, dstates, scale=scale, C=C, eps=eps, how=how)
    return dq, dk, dv, dig, dG, None, ds0


_core = recompute_vjp(_forward, _backward)


def _blocked_state(s: mm.State, K: int, V: int) -> mm.State:
    """A state [B, H, K, V], [B, H, K], [B, H] as zero-padded head-major blocks."""
    C = plc.pad_features(plc.pad_features(s.C, V), K, axis=-2)
    return mm.State(C, plc.pad_features(s.n, K)[..., None, :], s.m[..., None, None])


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
    """Pallas backend entry point; same contract as :func:`.reference.mlstm_reference`. ``interpret``: None
    picks the lowering per platform (interpreter on CPU), True forces the interpreter."""
    T, K, V = q.shape[1], q.shape[3], v.shape[-1]

    def build(kind):
        def run(q, k, v, i, f, initial_state, segment_ids):
            C, Kp, Vp, how = plc.kernel_dims(kind, T, K, V, chunk_size)
            p = mm.prepare(q, k, v, i, f, initial_state, segment_ids, C)
            qkv = plc.to_kernel(p.q, Kp), plc.to_kernel(p.k, Kp), plc.to_kernel(p.v, Vp)
            gates = map(plc.to_kernel, (p.ig, p.G, p.c))
            s0 = _blocked_state(p.s0, Kp, Vp)
            h, sT = _core(*qkv, *gates, s0, scale=K**-0.5, C=C, eps=float(eps), how=how)
            return plc.time_major(h)[:, :T, :, :V], mm.State(sT.C[..., :K, :V], sT.n[..., 0, :K], sT.m[..., 0, 0])

        return run

    plc.check_tuning(V)
    return plc.per_platform(build, (q, k, v, i, f, initial_state, segment_ids), interpret)
