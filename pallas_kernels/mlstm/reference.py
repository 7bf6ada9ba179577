"""Token-serial mLSTM reference (the oracle): one ``lax.scan`` step per token, in the accumulation dtype,
differentiated by plain autodiff. The recurrence is xLSTM's stabilised one (Beck et al. 2024, eqs. 19-27):

    m_t = max(log f_t + m_{t-1}, i_t),   i' = exp(i_t - m_t),   f' = exp(log f_t + m_{t-1} - m_t)
    C_t = f' C_{t-1} + i' k_t v_t^T,     n_t = f' n_{t-1} + i' k_t
    h_t = C_t^T q~_t / (max(|n_t . q~_t|, exp(-m_t)) + eps),   q~ = q K^-0.5,  log f_t = log_sigmoid(f_t)

The state is emptied (m = -inf, so f' = 0) before a token whose segment id differs from the previous token's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._common.checks import acc_dtype
from .._common.chunking import segment_resets
from .chunk_math import State, gates, initial


def mlstm_reference(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    i: jax.Array,
    f: jax.Array,
    *,
    initial_state: tuple[jax.Array, ...] | None,
    segment_ids: jax.Array | None,
    eps: float,
    chunk_size: int | None = None,
) -> tuple[jax.Array, State]:
    """Return (h [B,T,H,V] in q.dtype, final State). chunk_size is accepted for a uniform backend signature
    and ignored."""
    B, T, H, K = q.shape
    acc = acc_dtype(q.dtype)
    tm = lambda x: jnp.moveaxis(x, 1, 0)  # time-major
    ig, logf = gates(i, f, acc)
    xs = (
        tm(q.astype(acc)) * jnp.asarray(K**-0.5, acc),
        tm(k.astype(acc)),
        tm(v.astype(acc)),
        tm(ig),
        tm(logf),
        tm(segment_resets(segment_ids, B, T)),
    )

    def step(s, x):
        C, n, m = s
        q_t, k_t, v_t, i_t, lf_t, r_t = x
        decayed = jnp.where(r_t[:, None], -jnp.inf, m + lf_t)  # log of the old state's weight
        m = jnp.maximum(decayed, i_t)
        fp, ip = jnp.exp(decayed - m), jnp.exp(i_t - m)
        C = fp[..., None, None] * C + ip[..., None, None] * k_t[..., :, None] * v_t[..., None, :]
        n = fp[..., None] * n + ip[..., None] * k_t
        qn = jnp.sum(n * q_t, axis=-1)
        h = jnp.einsum("bhkv,bhk->bhv", C, q_t) / (jnp.maximum(jnp.abs(qn), jnp.exp(-m)) + eps)[..., None]
        return (C, n, m), h

    s, h = jax.lax.scan(step, tuple(initial(initial_state, B, H, K, v.shape[-1], acc)), xs)
    return jnp.moveaxis(h, 0, 1).astype(q.dtype), State(*s)
