"""Per-chunk math of the chunkwise-parallel mLSTM, forward and backward, shared by the pure-JAX chunked backend
(arrays with leading batch dims [..., C, D]) and the Pallas kernels (2-D blocks [C, D]); the state type, the
gates and the preparation of a whole sequence, shared with the reference too.

One chunk of C tokens starts from the stabilised state (C0 [K, V], n0 [K], m0 []): the true memory is
exp(m0) C0. With G the chunk-local cumulative log-forget gate and c the reset count (see _common/chunking.py),
every contribution to token t carries a log-weight

    l_tj = G_t - G_j + i_j     from token j <= t of the same segment (the intra-chunk "attention" logits)
    lam_t = G_t + m0           from the incoming state, if no reset came before t in this chunk

and the stabiliser m_t is the largest of them, so every weight exp(l - m_t) is <= 1 whatever the size of the
input gates. Then, with q already scaled and S = Q K^T:

    num_t = a_t q_t^T C0 + sum_j W_tj S_tj v_j,    qn_t = a_t q_t . n0 + sum_j W_tj S_tj
    h_t = num_t / (max(|qn_t|, exp(-m_t)) + eps),  W = exp(l - m), a = exp(lam - m)

The outgoing state is the same construction for the chunk's last token (its row of l and lam). Masked entries
are -inf in log space and exactly 0 as weights. The backward pass differentiates this by hand; the gradient
of a stabiliser goes to the log-weight that attains the maximum (shared equally on ties, as jnp.max does).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .._common.checks import acc_dtype
from .._common.chunking import dot, iota, last, pad_time, padded_gates


class State(NamedTuple):
    C: jax.Array  # [..., K, V] stabilised memory
    n: jax.Array  # [..., K] stabilised normaliser
    m: jax.Array  # [...] log-scale of C and n (-inf: empty)


# ----------------------------------------------------------------------------------------------------------
# Gates, initial state and a whole sequence prepared for the chunked backends (pure JAX and Pallas).


def gates(i: jax.Array, f: jax.Array, acc: Any) -> tuple[jax.Array, jax.Array]:
    """(input-gate pre-activation, log forget gate log_sigmoid(f)), both in ``acc``."""
    return i.astype(acc), jax.nn.log_sigmoid(f.astype(acc))


def initial(initial_state: tuple[jax.Array, ...] | None, B: int, H: int, K: int, V: int, acc: Any) -> State:
    """The given (C, n, m) in ``acc``, or the empty state (0, 0, -inf): no contribution to any token."""
    if initial_state is None:
        return State(jnp.zeros((B, H, K, V), acc), jnp.zeros((B, H, K), acc), jnp.full((B, H), -jnp.inf, acc))
    return State(*(x.astype(acc) for x in initial_state))


class Prepared(NamedTuple):
    q: jax.Array  # [B, Tp, H, K] (input dtype, zero padded)
    k: jax.Array
    v: jax.Array  # [B, Tp, H, V]
    ig: jax.Array  # [B, Tp, H] input-gate pre-activation (acc), -inf on padding: padding writes nothing
    G: jax.Array  # [B, Tp, H] chunk-local cumulative log forget gate (acc)
    c: jax.Array  # [B, Tp, H] int32 chunk-local reset count
    s0: State


def prepare(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    i: jax.Array,
    f: jax.Array,
    initial_state: tuple[jax.Array, ...] | None,
    segment_ids: jax.Array | None,
    chunk: int,
) -> Prepared:
    """Pad the time axis to a multiple of ``chunk``, turn the forget gates and the segments into (G, c)."""
    B, T, H, K = q.shape
    acc = acc_dtype(q.dtype)
    ig, logf = gates(i, f, acc)
    G, c = padded_gates(logf, segment_ids, (B, T, H), chunk, acc, decay_resets=False)
    Tp = G.shape[1]
    s0 = initial(initial_state, B, H, K, v.shape[-1], acc)
    return Prepared(pad_time(q, Tp), pad_time(k, Tp), pad_time(v, Tp), pad_time(ig, Tp, -jnp.inf), G, c, s0)


# ----------------------------------------------------------------------------------------------------------
# One chunk.


def _neg(x):
    return jnp.full((), -jnp.inf, x.dtype)


def token_logits(G, ig, c, m0):
    """(lam [..., C], l [..., C, C]): log-weights of the incoming state and of every earlier token."""
    C = G.shape[-1]
    incl = (iota((C, C), 1) <= iota((C, C), 0)) & (c[..., :, None] == c[..., None, :])
    l = jnp.where(incl, G[..., :, None] - G[..., None, :] + ig[..., None, :], _neg(G))
    lam = jnp.where(c == 0, G + m0[..., None], _neg(G))
    return lam, l


def end_logits(G, ig, c, m0):
    """(gamma [...], beta [..., C]): the last token's row of :func:`token_logits` (the outgoing state)."""
    GL, cL = last(G), last(c)
    beta = jnp.where(c == cL, GL - G + ig, _neg(G))
    gamma = jnp.where(cL[..., 0] == 0, GL[..., 0] + m0, _neg(G))
    return gamma, beta


def stabilise(lam, l):
    """m = max(lam, max_j l_j) over the last axis of l, and the weights exp(lam - m), exp(l - m)."""
    m = jnp.maximum(lam, jnp.max(l, axis=-1))
    return m, jnp.exp(lam - m), jnp.exp(l - m[..., None])


def stabilise_backward(lam, l, m, a, W, da, dW, dm):
    """Cotangents of (lam, l) given those of the weights a, W and of the stabiliser m itself."""
    dl, dlam = dW * W, da * a
    dm = dm - jnp.sum(dl, axis=-1) - dlam  # a and W are both exp(. - m)
    hit_l, hit_lam = l == m[..., None], lam == m
    share = dm / (jnp.sum(hit_l, axis=-1) + hit_lam).astype(m.dtype)
    zero = jnp.zeros((), m.dtype)
    return dlam + jnp.where(hit_lam, share, zero), dl + jnp.where(hit_l, share[..., None], zero)


def _rowdot(x, vec):
    """x [..., C, D] . vec [..., D] -> [..., C]."""
    return jnp.sum(x * vec[..., None, :], axis=-1)


class _Fwd(NamedTuple):
    lam: jax.Array
    l: jax.Array
    m: jax.Array
    a: jax.Array
    W: jax.Array
    S: jax.Array
    QC: jax.Array  # q_t^T C0, [..., C, V]
    Qn: jax.Array  # q_t . n0, [..., C]
    num: jax.Array
    qn: jax.Array
    use_qn: jax.Array  # |qn| >= exp(-m): which side of the denominator's max is taken
    den: jax.Array


def _forward(q, k, v, ig, G, c, s: State, eps) -> _Fwd:
    lam, l = token_logits(G, ig, c, s.m)
    m, a, W = stabilise(lam, l)
    S = dot(q, k, tb=True)
    P = S * W
    QC, Qn = dot(q, s.C), _rowdot(q, s.n)
    num = a[..., None] * QC + dot(P, v)
    qn = a * Qn + jnp.sum(P, axis=-1)
    floor = jnp.exp(-m)
    use_qn = jnp.abs(qn) >= floor
    den = jnp.where(use_qn, jnp.abs(qn), floor) + eps
    return _Fwd(lam, l, m, a, W, S, QC, Qn, num, qn, use_qn, den)


def chunk_output(q, k, v, ig, G, c, s: State, eps):
    """h [..., C, V] of one chunk (q scaled)."""
    f = _forward(q, k, v, ig, G, c, s, eps)
    return f.num / f.den[..., None]


def chunk_state(k, v, ig, G, c, s: State) -> State:
    """The state after the chunk."""
    gamma, beta = end_logits(G, ig, c, s.m)
    m, g, b = stabilise(gamma, beta)
    bk = b[..., :, None] * k
    return State(g[..., None, None] * s.C + dot(bk, v, ta=True), g[..., None] * s.n + jnp.sum(bk, axis=-2), m)


def chunk_backward(q, k, v, ig, G, c, s: State, dh, ds: State, eps):
    """Cotangents of one chunk: (dq (w.r.t. the scaled q), dk, dv, dig, dG, dState of the incoming state),
    given the output cotangent dh and the cotangent ds of the outgoing state."""
    f = _forward(q, k, v, ig, G, c, s, eps)
    zero = jnp.zeros((), q.dtype)
    # Output h = num / den.
    h = f.num / f.den[..., None]
    dnum = dh / f.den[..., None]
    dden = -jnp.sum(dh * h, axis=-1) / f.den
    # d|qn|/dqn = sign(qn), written as a select (qn != 0 where it is used; Mosaic's sign needs the chip).
    dqn = jnp.where(f.use_qn, jnp.where(f.qn < 0, -dden, dden), zero)
    dm = jnp.where(f.use_qn, zero, -dden * jnp.exp(-f.m))
    dP = dot(dnum, v, tb=True) + dqn[..., None]
    dS = dP * f.W
    da = jnp.sum(f.QC * dnum, axis=-1) + dqn * f.Qn
    dq = f.a[..., None] * (dot(dnum, s.C, tb=True) + dqn[..., None] * s.n[..., None, :]) + dot(dS, k)
    dk = dot(dS, q, ta=True)
    dv = dot(f.S * f.W, dnum, ta=True)
    aq = f.a[..., None] * q
    dC0 = dot(aq, dnum, ta=True)
    dn0 = jnp.sum(dqn[..., None] * aq, axis=-2)
    dlam, dl = stabilise_backward(f.lam, f.l, f.m, f.a, f.W, da, dP * f.S, dm)
    # Outgoing state C1 = g C0 + (b K)^T V, n1 = g n0 + K^T b.
    gamma, beta = end_logits(G, ig, c, s.m)
    m1, g, b = stabilise(gamma, beta)
    KdC = dot(k, ds.C)
    db = jnp.sum(KdC * v, axis=-1) + _rowdot(k, ds.n)
    dk = dk + b[..., :, None] * (dot(v, ds.C, tb=True) + ds.n[..., None, :])
    dv = dv + b[..., :, None] * KdC
    dg = jnp.sum(s.C * ds.C, axis=(-2, -1)) + jnp.sum(s.n * ds.n, axis=-1)
    dC0 = dC0 + g[..., None, None] * ds.C
    dn0 = dn0 + g[..., None] * ds.n
    dgamma, dbeta = stabilise_backward(gamma, beta, m1, g, b, dg, db, ds.m)
    # Log-weights -> G, i, m0 (l_tj = G_t - G_j + i_j, lam_t = G_t + m0; the end row likewise with t = L).
    C = G.shape[-1]
    is_last = (iota((C,), 0) == C - 1).astype(G.dtype)
    col = jnp.sum(dl, axis=-2)
    dG = jnp.sum(dl, axis=-1) - col + dlam - dbeta + is_last * (jnp.sum(dbeta, axis=-1) + dgamma)[..., None]
    dig = col + dbeta
    dm0 = jnp.sum(dlam, axis=-1) + dgamma
    return dq, dk, dv, dig, dG, State(dC0, dn0, dm0)
