"""Token-serial reference (the oracle) for the delta-rule family: one ``lax.scan`` step per token.

Per token, with the state S in [K, V] orientation:

    delta rule:  S <- exp(g_t) S;  u_t = beta_t (v_t - S^T k_t);  S <- S + k_t u_t^T;  o_t = S^T (scale q_t)
    Hebbian:     S <- exp(g_t) S + k_t v_t^T;                                         o_t = S^T (scale q_t)

The state is zeroed before a token whose segment id differs from the previous token's. Everything is computed
in the accumulation dtype (float32, or float64 for float64 inputs) and differentiated by plain autodiff, which
stores every per-token state: simple and exact, but O(T K V) memory in the backward pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._common.checks import acc_dtype
from .._common.chunking import segment_resets


def recurrent_reference(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array | None,
    g: jax.Array | None,
    *,
    scale: float,
    initial_state: jax.Array | None,
    segment_ids: jax.Array | None,
    delta: bool,
    chunk_size: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Return (o [B,T,H,V] in q.dtype, final state [B,H,K,V] in the accumulation dtype). chunk_size is
    accepted for a uniform backend signature and ignored."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    acc = acc_dtype(q.dtype)
    tm = lambda x: jnp.moveaxis(x.astype(acc), 1, 0)  # time-major
    xs = {
        "q": tm(q) * jnp.asarray(scale, acc),
        "k": tm(k),
        "v": tm(v),
        "r": jnp.moveaxis(segment_resets(segment_ids, B, T), 1, 0),
    }
    if beta is not None:
        xs["beta"] = tm(beta)
    if g is not None:
        xs["g"] = tm(g)
    S0 = jnp.zeros((B, H, K, V), acc) if initial_state is None else initial_state.astype(acc)

    def step(S, x):
        if "g" in x:
            S = jnp.exp(x["g"])[..., None, None] * S
        S = jnp.where(x["r"][:, None, None, None], jnp.zeros((), acc), S)
        if delta:
            pred = jnp.einsum("bhkv,bhk->bhv", S, x["k"])
            u = x["beta"][..., None] * (x["v"] - pred)
        else:
            u = x["v"]
        S = S + x["k"][..., :, None] * u[..., None, :]
        o = jnp.einsum("bhkv,bhk->bhv", S, x["q"])
        return S, o

    S, o = jax.lax.scan(step, S0, xs)
    return jnp.moveaxis(o, 0, 1).astype(q.dtype), S
