"""The two write rules of the associative store, run through the delta-rule kernels of `pallas_kernels`.

Per pair, token-serial, with the state S in the kernels' [K, V] orientation (recall is S^T q):

    delta:    S <- alpha (I - beta k k^T) S + beta k v^T
    hebbian:  S <- alpha S + beta k v^T

(the transpose of S <- alpha S (I - beta k k^T) + beta v k^T in [V, K] orientation). A pair with k = 0 and
alpha = 1 leaves S unchanged under both rules, which is what padding and masking below rely on.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from pallas_kernels import delta_rule, linear_attention

RULES = ("delta", "hebbian")


def backend_for(length: int) -> str:
    """Kernel backend for sequences of `length` pairs. Short ones go through the token-serial kernel, which
    compiles several times faster than the chunked one and runs as fast there (BENCHMARKS.md); longer ones use
    the platform's fastest ("auto")."""
    return "reference" if length <= 128 else "auto"


@partial(jax.jit, static_argnames=("rule", "backend"))
def write_states(
    states: jax.Array,
    keys: jax.Array,
    values: jax.Array,
    alpha: jax.Array,
    beta: jax.Array,
    *,
    rule: str,
    backend: str = "auto",
) -> jax.Array:
    """Apply T writes to B independent states.

    states [B, K, W] float32; keys [B, T, K]; values [B, T, W]; alpha [B, T] in (0, 1] or None (no decay,
    which also spares XLA folding a constant decay); beta [B, T]. Returns the new states [B, K, W]. One kernel
    call: no Python loop over pairs.
    """
    q = k = keys[:, :, None]
    g = None if alpha is None else jnp.log(alpha)[..., None]
    h0 = states[:, None]
    if rule == "delta":
        _, final = delta_rule(
            q,
            k,
            values[:, :, None],
            beta[..., None],
            g=g,
            scale=1.0,
            initial_state=h0,
            return_final_state=True,
            backend=backend,
        )
    else:
        _, final = linear_attention(
            q,
            k,
            (beta[..., None] * values)[:, :, None],
            g=g,
            scale=1.0,
            initial_state=h0,
            return_final_state=True,
            backend=backend,
        )
    return final[:, 0]


@partial(jax.jit, static_argnames=("backend",))
def erase(states: jax.Array, keys: jax.Array, *, backend: str = "auto") -> jax.Array:
    """Remove what each unit key recalls: S <- (I - k k^T) S per key, in order (the delta rule writing the
    zero value with beta = 1). Zero keys are no-ops. states [B, K, W], keys [B, T, K]."""
    zeros = jnp.zeros(keys.shape[:2] + states.shape[-1:], states.dtype)
    return write_states(
        states, keys, zeros, None, jnp.ones(keys.shape[:2], states.dtype), rule="delta", backend=backend
    )


def recall(states: jax.Array, queries: jax.Array) -> jax.Array:
    """S^T q for each query: states [B, K, W], queries [B, N, K] -> [B, N, W]."""
    return jnp.einsum("bkw,bnk->bnw", states, queries)
