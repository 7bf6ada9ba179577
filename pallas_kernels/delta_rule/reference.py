"""Token-serial reference (the oracle) for the delta-rule family: one ``lax.scan`` step per token.

Per token, with the state S in [K, V] orientation:

    delta rule:  S <- exp(g_t) S;  u_t = beta_t (v_t - S^T k_t);  S <- S + k_t u_t^T;  o_t = S^T (scale q_t)
    Hebbian:     S <- exp(g_t) S + k_t v_t^T;                                         o_t = S^T (scale q_t)

With ``read_before_write`` the read comes first, o_t = S_{t-1}^T (scale q_t), straight from the carried state
(the chunked backends get it by shifting the writes instead, see ``__init__.py``; this scan is what they are
tested against).

The state is zeroed before a token whose segment id differs from the previous token's. Everything is computed in
the accumulation dtype (float32, or float64 for float64 inputs) and differentiated by plain autodiff, which stores
every per-token state: simple and exact, but O(T K V) memory in the backward pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._common.checks import acc_dtype
from .._common.chunking import segment_resets


def token_write(
    S: jax.Array, k: jax.Array, v: jax.Array, beta: jax.Array | None, g: jax.Array | None, delta: bool
) -> jax.Array:
    """One token's write into S [B, H, K, V]: the decay exp(g), then the delta-rule or Hebbian update. k [B, H, K],
    v [B, H, V], beta and g [B, H] (or None: no decay) in S's dtype."""
    if g is not None:
        S = jnp.exp(g)[..., None, None] * S
    u = beta[..., None] * (v - jnp.einsum("bhkv,bhk->bhv", S, k)) if delta else v
    return S + k[..., :, None] * u[..., None, :]


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
    read_before_write: bool = False,
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
        before = jnp.where(x["r"][:, None, None, None], jnp.zeros((), acc), S)
        S = token_write(before, x["k"], x["v"], x.get("beta"), x.get("g"), delta)
        return S, jnp.einsum("bhkv,bhk->bhv", before if read_before_write else S, x["q"])

    S, o = jax.lax.scan(step, S0, xs)
    return jnp.moveaxis(o, 0, 1).astype(q.dtype), S
