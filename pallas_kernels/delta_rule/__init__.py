"""The delta-rule family: ``delta_rule`` (error-correcting write) and ``linear_attention`` (Hebbian write),
both with optional per-token log-decay ``g``, and the registration of their backends.

Backends (one module each, one contract: :func:`.reference.recurrent_reference`):

* ``reference``: token-serial ``lax.scan`` oracle (``reference.py``);
* ``chunked``: pure-JAX WY / UT chunked form (``chunked.py``);
* ``pallas``: fused Pallas forward / backward kernels (``pallas.py``);

the last two share the per-chunk math of ``chunk_math.py``.

Layout: q, k [B, T, H, K]; v [B, T, H, V]; beta, g [B, T, H]; state [B, H, K, V] in float32 (float64 for
float64 inputs). The output has the input dtype.
"""

from __future__ import annotations

import jax

from .._common import dispatch
from .._common.checks import check_common
from .chunked import chunked
from .reference import recurrent_reference

OPS = ("delta_rule", "linear_attention")

for _op in OPS:
    dispatch.register(_op, "reference", recurrent_reference)
    dispatch.register(_op, "chunked", chunked)

try:  # Pallas is part of jax, but keep the pure-JAX backends usable if its import ever fails.
    from .pallas import pallas_chunked

    for _op in OPS:
        dispatch.register(_op, "pallas", pallas_chunked)
except ImportError:  # pragma: no cover
    pass


def _run(op, q, k, v, beta, g, scale, initial_state, return_final_state, segment_ids, chunk_size, backend, delta):
    B, T, H, K, V = check_common(q, k, v, beta, g, initial_state, segment_ids, chunk_size, backend, scale)
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
) -> tuple[jax.Array, jax.Array | None]:
    """Gated delta rule. Per token, with S in [K, V] orientation:

        S <- exp(g_t) S;  u_t = beta_t (v_t - S^T k_t);  S <- S + k_t u_t^T;  o_t = S^T (scale q_t)

    Args:
      q, k: [B, T, H, K]; v: [B, T, H, V]; all float32, bfloat16 (or float16/float64), one dtype.
      beta: [B, T, H] write strength. g: [B, T, H] log-decay (<= 0) or None for no decay.
      scale: static multiplier of q, default K ** -0.5. q and k are used as given (not normalised).
      initial_state: [B, H, K, V] float32 (float64 for float64 inputs) or None (zeros).
      return_final_state: also return the state after the last token (else the second output is None).
      segment_ids: [B, T] ints; the state resets to zero wherever the id changes between tokens.
      chunk_size: chunk length of the chunked and Pallas backends.
      backend: "auto", "reference", "chunked" or "pallas".

    Returns:
      (o [B, T, H, V] in q's dtype, final state [B, H, K, V] or None).
    """
    return _run(
        "delta_rule", q, k, v, beta, g, scale, initial_state, return_final_state, segment_ids, chunk_size, backend, True
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
) -> tuple[jax.Array, jax.Array | None]:
    """(Gated) linear attention, the Hebbian member: S <- exp(g_t) S + k_t v_t^T; o_t = S^T (scale q_t).

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
    )


__all__ = ["delta_rule", "linear_attention"]
