"""Capacity of the two write rules: recall accuracy against the number of stored pairs per key dimension N/d.

For each rule (delta, hebbian), key kind, number of passes and d: draw `trials` sets of N (key, value) pairs,
keys and values in d dimensions, write them into a zero d x d state (`passes` times over the same pairs, in the
same order, with strength beta), recall every stored key, and count a recall correct when its nearest stored
value by cosine is its own. Key kinds:

    random      unit-norm Gaussian keys (mean cosine between keys 0, spread 1/sqrt(d))
    correlated  keys = normalise(sqrt(rho) c + sqrt(1 - rho) g / sqrt(d)) with one shared unit c per trial, so
                two keys have cosine about rho
    values      always random unit vectors

At a given d and key kind every rule and pass count sees the same pairs (a paired comparison).
Utilisation at a threshold is the largest N/d at which accuracy is still at least that threshold (linear
interpolation between measured N/d; see `crossing`). Every N of one configuration runs in one jitted program
(a lax.map over N, trials batched through the kernel's batch axis): pairs beyond N are masked to zero keys,
which the write rules leave untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .rules import RULES, backend_for, recall, write_states

KEY_KINDS = ("random", "correlated")


@dataclass(frozen=True)
class Study:
    dims: tuple[int, ...] = (64, 128, 256)
    ratios: tuple[float, ...] = (0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
    passes: tuple[int, ...] = (1, 3)
    rules: tuple[str, ...] = RULES
    keys: tuple[str, ...] = KEY_KINDS
    trials: int = 8
    beta: float = 1.0
    rho: float = 0.3
    seed: int = 0

    def configurations(self) -> list[tuple[str, int, str, int]]:
        """(key kind, d, rule, passes) in the order they run."""
        return [(k, d, r, p) for k in self.keys for d in self.dims for r in self.rules for p in self.passes]


def unit(x: jax.Array) -> jax.Array:
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


@partial(jax.jit, static_argnames=("kind", "trials", "n", "d"))
def sample_pairs(rng: jax.Array, kind: str, trials: int, n: int, d: int, rho: float) -> tuple[jax.Array, jax.Array]:
    """(keys, values) [trials, n, d] each, unit rows."""
    k_key, k_shared, k_value = jax.random.split(rng, 3)
    noise = jax.random.normal(k_key, (trials, n, d))
    if kind == "correlated":
        shared = unit(jax.random.normal(k_shared, (trials, 1, d)))
        noise = jnp.sqrt(rho) * shared + jnp.sqrt(1 - rho) * noise / math.sqrt(d)
    return unit(noise), unit(jax.random.normal(k_value, (trials, n, d)))


def recall_scores(
    states: jax.Array, keys: jax.Array, values: jax.Array, stored: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(accuracy, mean recall cosine) over the first `stored` pairs of every trial: a recall is correct when its
    nearest stored value by cosine is its own (a zero recall is never correct)."""
    recalled = recall(states, keys)
    norm = jnp.linalg.norm(recalled, axis=-1)
    cos = jnp.einsum("tnd,tmd->tnm", recalled / jnp.maximum(norm, 1e-30)[..., None], values)
    held = jnp.arange(keys.shape[1]) < stored
    nearest = jnp.argmax(jnp.where(held[None, None], cos, -jnp.inf), axis=-1)
    correct = (nearest == jnp.arange(keys.shape[1])) & (norm > 0) & held
    own = jnp.diagonal(cos, axis1=1, axis2=2)
    count = stored * keys.shape[0]
    return correct.sum() / count, jnp.where(held, own, 0).sum() / count


@partial(jax.jit, static_argnames=("rule", "passes"))
def scores(
    keys: jax.Array, values: jax.Array, counts: jax.Array, *, rule: str, passes: int, beta: float
) -> tuple[jax.Array, jax.Array]:
    """(accuracy, cosine) [len(counts)] after writing the first counts[i] of the pairs `passes` times."""
    trials, n_max, d = keys.shape

    def one(stored):
        held = (jnp.arange(n_max) < stored)[None, :, None]
        seq = jnp.tile(jnp.where(held, keys, 0), (1, passes, 1))
        vals = jnp.tile(values, (1, passes, 1))
        strength = jnp.full(seq.shape[:2], beta)
        states = write_states(
            jnp.zeros((trials, d, d)), seq, vals, None, strength, rule=rule, backend=backend_for(seq.shape[1])
        )
        return recall_scores(states, keys, values, stored)

    return jax.lax.map(one, counts)


def counts_for(ratios, d: int) -> np.ndarray:
    return np.array([max(1, round(r * d)) for r in ratios], np.int32)


def measure(study: Study, kind: str, d: int, rule: str, passes: int) -> pd.DataFrame:
    """One configuration's rows: n, n_over_d, accuracy, cosine."""
    counts = counts_for(study.ratios, d)
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(study.seed), d), KEY_KINDS.index(kind))
    keys, values = sample_pairs(rng, kind, study.trials, int(counts.max()), d, study.rho)
    accuracy, cosine = scores(keys, values, jnp.asarray(counts), rule=rule, passes=passes, beta=study.beta)
    return pd.DataFrame(
        {
            "rule": rule,
            "keys": kind,
            "passes": passes,
            "d": d,
            "n": counts,
            "n_over_d": counts / d,
            "accuracy": np.asarray(accuracy),
            "cosine": np.asarray(cosine),
        }
    )


def crossing(ratios: np.ndarray, accuracy: np.ndarray, threshold: float) -> float:
    """Largest N/d with accuracy >= threshold, interpolated linearly to where the curve first falls below it.
    nan if already below at the smallest N/d; inf if never below over the measured range."""
    below = np.flatnonzero(accuracy < threshold)
    if not len(below):
        return math.inf
    i = below[0]
    if i == 0:
        return math.nan
    frac = (accuracy[i - 1] - threshold) / (accuracy[i - 1] - accuracy[i])
    return float(ratios[i - 1] + frac * (ratios[i] - ratios[i - 1]))


def run(study: Study, *, progress: bool = True) -> pd.DataFrame:
    """Every configuration of `study`, one row per (configuration, N), with a rich bar on a terminal."""
    from rich.console import Console
    from rich.progress import track

    console = Console(stderr=True)
    bar = track(
        study.configurations(),
        description="memory capacity",
        console=console,
        disable=not (progress and console.is_terminal),
    )
    frames = [measure(study, *config) for config in bar]
    return pd.concat(frames, ignore_index=True)
