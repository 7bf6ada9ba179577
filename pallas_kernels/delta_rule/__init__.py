"""The delta-rule family: ``delta_rule`` (error-correcting write) and ``linear_attention`` (Hebbian write),
both with optional per-token log-decay ``g``, and the registration of their backends.

Backends (one module each, one contract: :func:`.reference.recurrent_reference`):

* ``reference``: token-serial ``lax.scan`` oracle (``reference.py``);
* ``chunked``: pure-JAX WY / UT chunked form (``chunked.py``);
* ``pallas``: fused Pallas forward / backward kernels (``pallas.py``);

the last two share the per-chunk math of ``chunk_math.py``.

Read-before-write (``read_before_write=True``: o_t = S_{t-1}^T (scale q_t), the read of delta-mem, BDH fast
weights and Titans) is native in the reference scan; the chunked backends read after the write, and
:func:`_shifted_writes` turns them into read-before-write backends once for all of them: position t is given token
t-1's write (k, v, beta, g shifted one step right), the first position of the sequence and of each segment a
no-op write (k = v = 0, beta = 0, g = 0), so the backend reads S_{t-1} at t, initial_state at 0 and zero at a
segment start; the last token's write, which the shift drops, is applied to the backend's final state with one
token-serial step (:func:`.reference.token_write`), so the final state is the ordinary one. The shift is plain
JAX around the backend, so autodiff composes it with the backend's custom VJP.

Layout: q, k [B, T, H, K]; v [B, T, H, V]; beta, g [B, T, H]; state [B, H, K, V] in float32 (float64 for
float64 inputs). The output has the input dtype.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .._common import dispatch
from .._common.checks import check_common
from .._common.chunking import segment_resets
from .chunked import chunked
from .reference import recurrent_reference, token_write

OPS = ("delta_rule", "linear_attention")


def _shifted_writes(impl):
    """The backend ``impl``, which reads after each write, with a ``read_before_write`` switch (see the module
    docstring)."""

    @functools.wraps(impl)
    def backend(q, k, v, beta, g, *, segment_ids, delta, read_before_write=False, **kw):
        if not read_before_write:
            return impl(q, k, v, beta, g, segment_ids=segment_ids, delta=delta, **kw)
        B, T = q.shape[:2]
        no_op = segment_resets(segment_ids, B, T).at[:, 0].set(True)  # first position of the sequence / a segment

        def shift(x):
            if x is None:
                return None
            later = jnp.pad(x[:, :-1], [(0, 0), (1, 0)] + [(0, 0)] * (x.ndim - 2))
            return jnp.where(no_op.reshape(no_op.shape + (1,) * (x.ndim - 2)), jnp.zeros((), x.dtype), later)

        o, S = impl(q, *map(shift, (k, v, beta, g)), segment_ids=segment_ids, delta=delta, **kw)
        last = lambda x: None if x is None else x[:, -1].astype(S.dtype)
        return o, token_write(S, *map(last, (k, v, beta, g)), delta)

    return backend


for _op in OPS:
    dispatch.register(_op, "reference", recurrent_reference)
    dispatch.register(_op, "chunked", _shifted_writes(chunked))

try:  # Pallas is part of jax, but keep the pure-JAX backends usable if its import ever fails.
    from .pallas import pallas_chunked

    for _op in OPS:
        dispatch.register(_op, "pallas", _shifted_writes(pallas_chunked))
except ImportError:  # pragma: no cover
    pass


def _run(op, q, k, v, beta, g, scale, initial_state, return_final_state, segment_ids, chunk_size, backend, delta, rbw):
    B, T, H, K, V = check_common(q, k, v, beta, g, initial_state, segment_ids, chunk_size, backend, scale)
    if not isinstance(rbw, bool):
        raise ValueError(f"read_before_write is {rbw!r}, expected True or False (static)")
    scale = K**-0.5 if scale is None else float(scale)
    _, impl = dispatch.resolve(op, backend)
    o, state = impl(
        q,
        k,
        v,
        beta,
        g,
        scale=scale,
        initial_state=initial_state,
        segment_ids=segment_ids,
        chunk_size=int(chunk_size),
        delta=delta,
        read_before_write=rbw,
    )
    return o, (state if return_final_state else None)


def delta_rule(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array,
    *,
    g: jax.Array | None = None,
    scale: float | None = None,
    initial_state: jax.Array | None = None,
    return_final_state: bool = False,
    segment_ids: jax.Array | None = None,
    chunk_size: int = 64,
    backend: str = "auto",
    read_before_write: bool = False,
) -> tuple[jax.Array, jax.Array | None]:
    """Gated delta rule. Per token, with S in [K, V] orientation:

        S <- exp(g_t) S;  u_t = beta_t (v_t - S^T k_t);  S <- S + k_t u_t^T;  o_t = S^T (scale q_t)

    or, with ``read_before_write``, o_t = S_{t-1}^T (scale q_t): token t reads the state before its own decay and
    write (initial_state at t = 0, zero at the first token of a segment), as delta-mem, BDH and Titans read.

    Args:
      q, k: [B, T, H, K]; v: [B, T, H, V]; all float32, bfloat16 (or float16/float64), one dtype.
      beta: [B, T, H] write strength. g: [B, T, H] log-decay (<= 0) or None for no decay.
      scale: static multiplier of q, default K ** -0.5. q and k are used as given (not normalised).
      initial_state: [B, H, K, V] float32 (float64 for float64 inputs) or None (zeros).
      return_final_state: also return the state after the last token (else the second output is None).
      segment_ids: [B, T] ints; the state resets to zero wherever the id changes between tokens.
      chunk_size: chunk length of the chunked and Pallas backends.
      backend: "auto", "reference", "chunked" or "pallas".
      read_before_write: read S_{t-1} instead of S_t (static). The final state is the same either way.

    Returns:
      (o [B, T, H, V] in q's dtype, final state [B, H, K, V] or None).
    """
    return _run(
        "delta_rule",
        q,
        k,
        v,
        beta,
        g,
        scale,
        initial_state,
        return_final_state,
        segment_ids,
        chunk_size,
        backend,
        True,
        read_before_write,
    )


def linear_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    g: jax.Array | None = None,
    scale: float | None = None,
    initial_state: jax.Array | None = None,
    return_final_state: bool = False,
    segment_ids: jax.Array | None = None,
    chunk_size: int = 64,
    backend: str = "auto",
    read_before_write: bool = False,
) -> tuple[jax.Array, jax.Array | None]:
    """(Gated) linear attention, the Hebbian member: S <- exp(g_t) S + k_t v_t^T; o_t = S^T (scale q_t), or
    o_t = S_{t-1}^T (scale q_t) with ``read_before_write``.

    Arguments and returns as :func:`delta_rule`, without beta."""
    return _run(
        "linear_attention",
        q,
        k,
        v,
        None,
        g,
        scale,
        initial_state,
        return_final_state,
        segment_ids,
        chunk_size,
        backend,
        False,
        read_before_write,
    )


__all__ = ["delta_rule", "linear_attention"]
