"""The mLSTM (xLSTM's matrix-memory LSTM, Beck et al. 2024): exponential input gate, sigmoid forget gate,
covariance write C += i k v^T with a normaliser n and the stabiliser m that keeps exp(i) from overflowing; and
the registration of its backends.

Backends (one module each, one contract: :func:`.reference.mlstm_reference`):

* ``reference``: token-serial ``lax.scan`` oracle (``reference.py``);
* ``chunked``: pure-JAX chunkwise-parallel form (``chunked.py``);
* ``pallas``: fused Pallas forward / backward kernels (``pallas.py``);

the last two share the per-chunk math of ``chunk_math.py``.
"""

from __future__ import annotations

import jax

from .._common import dispatch
from .._common.checks import check_mlstm
from .chunk_math import State
from .chunked import mlstm_chunked
from .reference import mlstm_reference

dispatch.register("mlstm", "reference", mlstm_reference)
dispatch.register("mlstm", "chunked", mlstm_chunked)

try:  # Pallas is part of jax, but keep the pure-JAX backends usable if its import ever fails.
    from .pallas import mlstm_pallas

    dispatch.register("mlstm", "pallas", mlstm_pallas)
except ImportError:  # pragma: no cover
    pass


def mlstm(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    i: jax.Array,
    f: jax.Array,
    *,
    initial_state: tuple[jax.Array, jax.Array, jax.Array] | None = None,
    return_final_state: bool = False,
    segment_ids: jax.Array | None = None,
    chunk_size: int = 64,
    eps: float = 1e-6,
    backend: str = "auto",
) -> tuple[jax.Array, State | None]:
    """mLSTM over a sequence. Per token, with log f_t = log_sigmoid(f_t) and q~ = q K^-0.5:

        m_t = max(log f_t + m_{t-1}, i_t),   i' = exp(i_t - m_t),   f' = exp(log f_t + m_{t-1} - m_t)
        C_t = f' C_{t-1} + i' k_t v_t^T,     n_t = f' n_{t-1} + i' k_t
        h_t = C_t^T q~_t / (max(|n_t . q~_t|, exp(-m_t)) + eps)

    (C, n) are the true memory and normaliser divided by exp(m), so they stay bounded for any input gate.
    With no initial state the state starts empty (m = -inf): the first token has f' = 0, as in xLSTM's
    stabilised parallel form. A new segment id empties the state the same way.

    Args:
      q, k: [B, T, H, K]; v: [B, T, H, V]; float32, bfloat16 (or float16/float64), one dtype.
      i: [B, T, H] input-gate pre-activation; f: [B, T, H] forget-gate pre-activation (any float dtype,
        computed in float32, or float64 for float64 inputs).
      initial_state: a state (C [B, H, K, V], n [B, H, K], m [B, H]) in float32 (float64 for float64 inputs),
        e.g. the final state of a previous call; m = -inf (with C, n zero) is the empty state. None: empty.
      return_final_state: also return the state after the last token (else the second output is None).
      segment_ids: [B, T] ints; the state is emptied wherever the id changes between tokens.
      chunk_size: chunk length of the chunked and Pallas backends.
      eps: added to the denominator of h.
      backend: "auto", "reference", "chunked" or "pallas".

    Returns:
      (h [B, T, H, V] in q's dtype, final state (C, n, m) as a NamedTuple, or None).
    """
    check_mlstm(q, k, v, i, f, initial_state, segment_ids, chunk_size, backend, eps)
    _, impl = dispatch.resolve("mlstm", backend)
    h, state = impl(
        q,
        k,
        v,
        i,
        f,
        initial_state=None if initial_state is None else tuple(initial_state),
        segment_ids=segment_ids,
        chunk_size=int(chunk_size),
        eps=float(eps),
    )
    return h, (state if return_final_state else None)


__all__ = ["State", "mlstm"]
