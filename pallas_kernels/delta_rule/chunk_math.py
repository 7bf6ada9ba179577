"""Per-chunk math of the chunked (WY / UT) delta rule, forward and backward, shared by the pure-JAX chunked
backend (arrays with leading batch dims [..., C, D]) and the Pallas kernels (2-D blocks [C, D]), and the
preparation of a whole sequence for both.

Notation for one chunk of C tokens starting from state S0 [K, V] (q already multiplied by ``scale``):

    G_i      chunk-local cumulative log-decay, c_i chunk-local reset count (see _common/chunking.py)
    Gam_ij   exp(G_i - G_j) if j <= i and c_i == c_j else 0      (decay from token j to token i)
    a_i      exp(G_i) if c_i == 0 else 0                          (decay from the chunk start to token i)
    b_j      exp(G_L - G_j) if c_j == c_L else 0                  (decay from token j to the chunk end L)
    gamma    exp(G_L) if c_L == 0 else 0                          (decay of S0 over the whole chunk)

Delta rule: the update vectors satisfy (I + A) U = diag(beta) V - diag(beta a) K S0 with the strictly lower
A_ij = beta_i (k_i . k_j) Gam_ij, so with the UT transform T = (I + A)^-1 (never formed on CPU):

    W = T diag(beta a) K,   Ubar = T diag(beta) V,   U = Ubar - W S0           (WY representation)
    O = diag(a) Q S0 + (Q K^T * Gam) U,             S1 = gamma S0 + (diag(b) K)^T U

Hebbian (linear attention) is the same with U = V and no W. The backward pass below differentiates these
formulas by hand; only S0 and dS1 cross chunk boundaries, so the per-chunk states are all that must be
materialised (and they are recomputed, not stored, between forward and backward).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from .._common.checks import acc_dtype
from .._common.chunking import dot, iota, last, pad_time, padded_gates
from .._common.vma import match_vma

# ----------------------------------------------------------------------------------------------------------
# A whole sequence, prepared for the chunked backends (pure JAX and Pallas). Plain, differentiable JAX, so
# gradients w.r.t. g and initial_state flow through it by autodiff.


class Prepared(NamedTuple):
    q: jax.Array  # [B, Tp, H, K] (input dtype, zero padded)
    k: jax.Array
    v: jax.Array  # [B, Tp, H, V]
    beta: jax.Array | None  # [B, Tp, H]
    G: jax.Array  # [B, Tp, H] chunk-local cumulative log-decay (acc dtype)
    c: jax.Array  # [B, Tp, H] int32 chunk-local reset count
    h0: jax.Array  # [B, H, K, V] acc dtype


def prepare(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array | None,
    g: jax.Array | None,
    initial_state: jax.Array | None,
    segment_ids: jax.Array | None,
    chunk: int,
) -> Prepared:
    """Pad the time axis to a multiple of ``chunk``, turn g and the segments into (G, c), default h0 to 0."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    acc = acc_dtype(q.dtype)
    G, c = padded_gates(g, segment_ids, (B, T, H), chunk, acc, decay_resets=True)
    Tp = G.shape[1]
    h0 = jnp.zeros((B, H, K, V), acc) if initial_state is None else initial_state.astype(acc)
    return Prepared(pad_time(q, Tp), pad_time(k, Tp), pad_time(v, Tp), pad_time(beta, Tp), G, c, h0)


# ----------------------------------------------------------------------------------------------------------
# Masks of one chunk.


class Masks(NamedTuple):
    gam: jax.Array  # [..., C, C] decays j -> i, causal incl. diagonal, same segment
    strict: jax.Array  # [..., C, C] bool: j < i (within the same segment where gam != 0)
    a: jax.Array  # [..., C]
    b: jax.Array  # [..., C]
    gamma: jax.Array  # [...]


def masks(G, c) -> Masks:
    C = G.shape[-1]
    zero = jnp.zeros((), G.dtype)
    row, col = iota((C, C), 0), iota((C, C), 1)
    incl = (col <= row) & (c[..., :, None] == c[..., None, :])
    diff = G[..., :, None] - G[..., None, :]
    gam = jnp.where(incl, jnp.exp(jnp.where(incl, diff, zero)), zero)
    a = jnp.where(c == 0, jnp.exp(G), zero)
    GL = last(G)
    cL = last(c)
    same_end = c == cL
    b = jnp.where(same_end, jnp.exp(jnp.where(same_end, GL - G, zero)), zero)
    gamma = jnp.where(cL[..., 0] == 0, jnp.exp(GL[..., 0]), zero)
    return Masks(gam, col < row, a, b, gamma)


# ----------------------------------------------------------------------------------------------------------
# Solvers for the unit lower-triangular system (I + A) X = R. Both form T = (I + A)^-1 explicitly (their
# ``prepare``) and apply it with matrix products; they differ in how T is formed.


class _ExplicitInverse:
    @staticmethod
    def solve(Tm, r):
        return dot(Tm, r)

    @staticmethod
    def solve_t(Tm, r):
        return dot(Tm, r, ta=True)


class BlockedSolver(_ExplicitInverse):
    """T = (I + A)^-1 by block forward substitution, using only batched matrix products: the diagonal
    ``base`` x ``base`` blocks are inverted row by row (InverseSolver), then neighbouring blocks are merged,
    [[L11, 0], [L21, L22]]^-1 = [[T11, 0], [-T22 L21 T11, T22]], doubling the block size each round. Same
    numerics as substitution (no power series, so no overflow from cancelling terms with unnormalised keys).
    Used by the pure-JAX chunked backend: XLA's batched triangular_solve on CPU calls a threaded BLAS trsm that
    was seen to stall on a loaded machine (see BENCHMARKS.md, section pallas_kernels)."""

    base = 16

    @classmethod
    def prepare(cls, A):
        C = A.shape[-1]
        s = min(cls.base, C)
        P = s
        while P < C:
            P *= 2
        if P != C:  # extend with identity rows/cols: inverse of blockdiag(L, I) is blockdiag(L^-1, I)
            pad = [(0, 0)] * (A.ndim - 2) + [(0, P - C), (0, P - C)]
            A = jnp.pad(A, pad)
        blocks = [InverseSolver.prepare(A[..., i : i + s, i : i + s]) for i in range(0, P, s)]
        while s < P:
            merged = []
            for j in range(0, len(blocks), 2):
                i0 = j * s
                T11, T22 = blocks[j], blocks[j + 1]
                L21 = A[..., i0 + s : i0 + 2 * s, i0 : i0 + s]
                T21 = -dot(dot(T22, L21), T11)
                top = jnp.concatenate([T11, jnp.zeros_like(T11)], axis=-1)
                bottom = jnp.concatenate([T21, T22], axis=-1)
                merged.append(jnp.concatenate([top, bottom], axis=-2))
            blocks, s = merged, 2 * s
        Tm = blocks[0]
        return Tm[..., :C, :C]


class InverseSolver(_ExplicitInverse):
    """Forms T = (I + A)^-1 by row-wise forward substitution using only masks, sums and elementwise ops
    (lowerable inside a Pallas kernel)."""

    @staticmethod
    def prepare(A):
        C = A.shape[-1]
        rows = iota((C, C), 0)
        eye = (rows == iota((C, C), 1)).astype(A.dtype)
        zero = jnp.zeros((), A.dtype)

        def body(i, Tm):
            sel = rows == i
            a_row = jnp.sum(jnp.where(sel, A, zero), axis=-2)  # A[i, :]
            # Rows >= i of Tm are still identity rows, and A[i, j] = 0 for j >= i.
            new = jnp.sum(a_row[..., :, None] * Tm, axis=-2)  # A[i, :] @ Tm
            return jnp.where(sel, Tm - new[..., None, :], Tm)

        Tm = match_vma(jnp.broadcast_to(eye, A.shape), A)
        return lax.fori_loop(1, C, body, Tm)


# ----------------------------------------------------------------------------------------------------------
# Forward pieces.


class Intra(NamedTuple):
    P: jax.Array  # [..., C, C] (Q K^T) * Gam
    fac: jax.Array | None  # factorisation of I + A (solver specific; delta only)


def intra(q, k, beta, m: Masks, solver, delta: bool, need_output: bool = True) -> Intra:
    """Everything inside one chunk that does not depend on the incoming state."""
    P = dot(q, k, tb=True) * m.gam if need_output else None
    if not delta:
        return Intra(P, None)
    KK = dot(k, k, tb=True)
    A = jnp.where(m.strict, beta[..., :, None] * KK * m.gam, jnp.zeros((), KK.dtype))
    return Intra(P, solver.prepare(A))


def chunk_update(S0, k, v, beta, x: Intra, m: Masks, solver, delta: bool):
    """Update vectors U of the chunk given its incoming state S0. For the delta rule
    U = T diag(beta) (V - diag(a) K S0), i.e. Ubar - W S0 without forming W or Ubar."""
    if not delta:
        return v
    return solver.solve(x.fac, beta[..., :, None] * (v - m.a[..., :, None] * dot(k, S0)))


def wy(k, v, beta, x: Intra, m: Masks, solver):
    """(W, Ubar) = (T diag(beta a) K, T diag(beta) V): the state-independent halves of U = Ubar - W S0, which
    the chunk-parallel kernels form for every chunk at once before the sequential pass over chunks."""
    return solver.solve(x.fac, (beta * m.a)[..., :, None] * k), solver.solve(x.fac, beta[..., :, None] * v)


def chunk_output(S0, q, U, x: Intra, m: Masks):
    return dot(m.a[..., :, None] * q, S0) + dot(x.P, U)


def chunk_state(S0, k, U, m: Masks):
    return m.gamma[..., None, None] * S0 + dot(m.b[..., :, None] * k, U, ta=True)


# ----------------------------------------------------------------------------------------------------------
# Backward pieces.


def gram(q, k, delta: bool):
    """(Q K^T, K K^T or None): the state-independent products the backward pass recomputes per chunk."""
    return dot(q, k, tb=True), (dot(k, k, tb=True) if delta else None)


def state_cotangent(q, k, W, dS1, dO, m: Masks, P):
    """dS0, the cotangent of a chunk's incoming state, from that of its outgoing state dS1 and of its output
    dO: the only quantity the reverse pass over chunks must carry. With W from :func:`wy` (None: Hebbian),
    W^T dU = (diag(beta a) K)^T T^T dU, the delta rule's term of :func:`chunk_backward`."""
    dS0 = dot(m.a[..., :, None] * q, dO, ta=True) + m.gamma[..., None, None] * dS1
    if W is None:
        return dS0
    dU = dot(P, dO, ta=True) + dot(m.b[..., :, None] * k, dS1)
    return dS0 - dot(W, dU, ta=True)


def chunk_backward(q, k, v, beta, S0, dS1, dO, U, fac, QK, KK, m: Masks, solver, delta: bool):
    """Cotangents of one chunk.

    Inputs: the chunk's (scaled) q, k, v, beta, its incoming state S0, the cotangent dS1 of its outgoing
    state, the output cotangent dO, the update vectors U and the factorisation ``fac`` of I + A from the
    forward recurrence, and the Gram matrices from :func:`gram`.

    Returns (dS0, dq, dk, dv, dbeta, dG): dq is w.r.t. the scaled q, dbeta is None for Hebbian and dG is the
    cotangent of the chunk-local cumulative log-decay G.

    Identities that keep this cheap (T = (I + A)^-1, dY = T^T dU the cotangent of diag(beta) V):
      dW = -dU S0^T  =>  dX = T^T dW = -dY S0^T          (cotangent of diag(beta a) K)
      dA = -(dX W^T + dY Ubar^T) = -dY (Ubar - W S0)^T = -dY U^T
      W^T dU = (diag(beta a) K)^T dY
    so neither W nor Ubar is needed here.
    """
    zero = jnp.zeros((), q.dtype)
    bk = m.b[..., :, None] * k
    dU = dot(QK * m.gam, dO, ta=True) + dot(bk, dS1)
    dS0 = dot(m.a[..., :, None] * q, dO, ta=True) + m.gamma[..., None, None] * dS1
    dP = dot(dO, U, tb=True)  # [C, C]
    dM = dP * m.gam
    dOS = dot(dO, S0, tb=True)  # [C, K]
    dq = dot(dM, k) + m.a[..., :, None] * dOS
    US = dot(U, dS1, tb=True)  # [C, K]
    dk = dot(dM, q, ta=True) + m.b[..., :, None] * US
    dGam = dP * QK
    da = jnp.sum(q * dOS, axis=-1)
    db = jnp.sum(k * US, axis=-1)
    dgamma = jnp.sum(S0 * dS1, axis=(-2, -1))
    dbeta = None
    if delta:
        dY = solver.solve_t(fac, dU)
        bak = (beta * m.a)[..., :, None] * k
        dS0 = dS0 - dot(bak, dY, ta=True)
        dX = -dot(dY, S0, tb=True)
        dA = jnp.where(m.strict, -dot(dY, U, tb=True), zero)
        dB = dA * m.gam  # cotangent of diag(beta) K K^T
        bdB = beta[..., :, None] * dB
        dk = dk + dot(bdB + jnp.swapaxes(bdB, -1, -2), k) + (beta * m.a)[..., :, None] * dX
        dGam = dGam + dA * beta[..., :, None] * KK
        xk = jnp.sum(dX * k, axis=-1)
        dbeta = jnp.sum(dB * KK, axis=-1) + m.a * xk + jnp.sum(dY * v, axis=-1)
        da = da + beta * xk
        dv = beta[..., :, None] * dY
    else:
        dv = dU
    E = dGam * m.gam
    C = q.shape[-2]
    is_last = (iota((C,), 0) == C - 1).astype(q.dtype)
    tail = jnp.sum(db * m.b, axis=-1, keepdims=True) + (dgamma * m.gamma)[..., None]
    dG = jnp.sum(E, axis=-1) - jnp.sum(E, axis=-2) + da * m.a - db * m.b + is_last * tail
    return dS0, dq, dk, dv, dbeta, dG
