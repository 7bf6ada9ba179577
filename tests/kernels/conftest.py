"""Fixtures for the pallas_kernels tests: random inputs and an x64 context for tight comparisons."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest


def make_inputs(B=2, T=13, H=3, K=4, V=5, *, dtype=jnp.float32, gated=True, h0=False, segments=False,
                key_scale=0.5, seed=0):
    """Inputs for delta_rule / linear_attention. Keys are scaled down so that beta * |k|^2 stays < 2 (the
    stable regime of the delta rule) unless ``key_scale`` says otherwise."""
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s)
    d = dict(
        q=jnp.asarray(f(B, T, H, K), dtype),
        k=jnp.asarray(f(B, T, H, K) * key_scale, dtype),
        v=jnp.asarray(f(B, T, H, V), dtype),
        beta=jnp.asarray(1 / (1 + np.exp(-f(B, T, H))), dtype),
    )
    acc = jnp.float64 if dtype == jnp.float64 else jnp.float32
    if gated:
        d["g"] = jnp.asarray(-np.log1p(np.exp(f(B, T, H))) * 0.5, dtype)
    if h0:
        d["initial_state"] = jnp.asarray(f(B, H, K, V), acc)
    if segments:
        d["segment_ids"] = jnp.asarray(np.cumsum(rng.random((B, T)) < 0.25, axis=1), jnp.int32)
    return d


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture
def inputs():
    return make_inputs
