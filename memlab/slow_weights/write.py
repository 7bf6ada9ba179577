"""Writing facts into a model: the slow memories by Adam (the paper's write), by one delta-rule pass (the
ablation), or every parameter by Adam (full fine-tuning, the interference control).

Every write minimises the facts' document loss, all facts jointly in one batch per step (each fact's line as a
next-token row, memlab.data.facts.document_rows), in one compiled `lax.scan` over the steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import pallas_kernels
from memlab.data.facts import Fact, document_rows, probe_rows
from memlab.errors import ConfigError
from memlab.models.params import flat_params
from memlab.objectives import masked_cross_entropy
from memlab.train.partial import split_trainable

SLOW = "slow"


def row_length(facts: list[Fact]) -> int:
    """The shortest row every fact's line (and probe) fits, rounded up to a multiple of 8."""
    longest = max(len(f.line.encode("utf-8")) for f in facts)
    return -(-longest // 8) * 8


WRITABLE = ("memory", "block")  # what a write trains: the slow memories, or the whole slow block


def memory_names(model: nnx.Module, what: str = "memory") -> frozenset[str]:
    """Paths a write trains: the slow memories (`slow/<layer>/memory`), or with `what="block"` every parameter of
    the slow block (its address projection and gate too). A ConfigError for a model without a slow block."""
    if what not in WRITABLE:
        raise ConfigError(f"a write trains one of {', '.join(WRITABLE)}; got {what!r}")
    names = frozenset(n for n in flat_params(nnx.state(model, nnx.Param)) if n.startswith(f"{SLOW}/"))
    chosen = names if what == "block" else frozenset(n for n in names if n.endswith("/memory"))
    if not chosen:
        raise ConfigError(
            f"{type(model).__name__} has no slow block to write: train a BDH run with model.slow_layers set "
            "(e.g. experiments/slow_weights.py)"
        )
    return chosen


def _contrastive(model, probes) -> jax.Array:
    """InfoNCE over the facts on the answer's first byte: prompt i should give its own first byte more
    probability than the other facts' (facts whose answers start with the same byte are left out)."""
    logits = model.logits(probes["inputs"])
    at = jnp.take_along_axis(logits, probes["answer_start"][:, None, None], axis=1)[:, 0]  # [F, V]
    first = probes["targets"][jnp.arange(len(at)), probes["answer_start"]]  # [F]
    scores = jax.nn.log_softmax(at, -1)[:, first]  # [F, F]: log p_i(first byte of j)
    same = (first[:, None] == first[None, :]) & ~jnp.eye(len(first), dtype=bool)
    return -jnp.mean(jnp.diag(jax.nn.log_softmax(jnp.where(same, -jnp.inf, scores), axis=-1)))


def adam_write(
    model: nnx.Module,
    facts: list[Fact],
    *,
    steps: int = 300,
    lr: float = 1e-2,
    contrastive: float = 0.0,
    names: frozenset[str] | None = None,
) -> tuple[nnx.Module, np.ndarray]:
    """(the model with the `names` parameters (default: the slow memories) trained by `steps` Adam steps on the
    facts, the loss per step). Everything else is left bit-identical. `contrastive` > 0 adds that weight of the
    InfoNCE term (`_contrastive`), the inferred "joint contrastive encoding"."""
    if steps < 1 or not lr > 0 or contrastive < 0:
        raise ConfigError(f"a write needs steps >= 1, lr > 0, contrastive >= 0; got {steps}, {lr}, {contrastive}")
    names = memory_names(model) if names is None else names
    length = row_length(facts)
    doc = {k: jnp.asarray(v) for k, v in document_rows(facts, length).items()}
    probes = {k: jnp.asarray(v) for k, v in probe_rows(facts, length).items()}
    graphdef, params = nnx.split(model, nnx.Param)
    train, frozen = split_trainable(params, names)
    tx = optax.adam(lr)

    def loss_fn(train):
        written = nnx.merge(graphdef, nnx.merge_state(train, frozen))
        loss = masked_cross_entropy(written.logits(doc["inputs"]), doc["targets"], doc["mask"])[0]
        return loss + contrastive * _contrastive(written, probes) if contrastive else loss

    @jax.jit
    def run(train):
        def step(carry, _):
            train, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(train)
            updates, opt_state = tx.update(grads, opt_state, train)
            return (optax.apply_updates(train, updates), opt_state), loss

        (train, _), losses = jax.lax.scan(step, (train, tx.init(train)), None, length=steps)
        return train, losses

    train, losses = run(train)
    return nnx.merge(graphdef, nnx.merge_state(train, frozen)), np.asarray(losses)


def delta_write(
    model: nnx.Module, facts: list[Fact], *, read_steps: int = 100, read_lr: float = 0.1, beta: float = 1.0
) -> tuple[nnx.Module, np.ndarray]:
    """The one-shot ablation: the reads the facts want, then one delta-rule pass that stores them.

    With the backbone and the memory M0 fixed, the reads r_t of the slow block at every position of the facts'
    lines are made free variables and fitted by `read_steps` Adam steps on the document loss (target reads r*);
    then `pallas_kernels.delta_rule` writes M <- M + beta k (v - M^T k)^T over all positions in order, with keys
    k = q / |q| (the unit address) and values v = r* / |q|, so that q^T M = r* where a write landed exactly.
    Returns (a copy of the model with M replaced, the read-fitting loss per step). One slow layer only."""
    model = nnx.clone(model)  # the caller's model keeps its memory
    memories = memory_names(model)
    if len(memories) != 1 or model.cfg.slow_hebbian:
        raise ConfigError("the delta write handles one slow layer without a Hebbian fast state")
    layer = model.slow_layers[0]
    block = model.slow[str(layer)]
    doc = {k: jnp.asarray(v) for k, v in document_rows(facts, row_length(facts)).items()}

    @jax.jit
    def targets():
        q = model.slow_addresses(doc["inputs"], layer)  # [F, T, m]
        tx = optax.adam(read_lr)

        def loss_fn(r):
            logits = model.logits(doc["inputs"], reads={layer: r})
            return masked_cross_entropy(logits, doc["targets"], doc["mask"])[0]

        def step(carry, _):
            r, opt_state = carry
            loss, grad = jax.value_and_grad(loss_fn)(r)
            updates, opt_state = tx.update(grad, opt_state, r)
            return (optax.apply_updates(r, updates), opt_state), loss

        r0 = block.read(q, None)
        (r, _), losses = jax.lax.scan(step, (r0, tx.init(r0)), None, length=read_steps)
        norm = jnp.linalg.norm(q, axis=-1, keepdims=True)
        live = (norm[..., 0] > 0) & (doc["mask"] > 0)  # positions with an address on a real token
        k = jnp.where(live[..., None], q / jnp.maximum(norm, 1e-12), 0.0)
        v = jnp.where(live[..., None], r / jnp.maximum(norm, 1e-12), 0.0)
        flat = lambda a: a.reshape(1, -1, 1, a.shape[-1])  # noqa: E731  (all positions as one sequence, one head)
        state = block.memory[...][None, None]
        _, memory = pallas_kernels.delta_rule(
            flat(k),
            flat(k),
            flat(v),
            (beta * live).reshape(1, -1, 1).astype(jnp.float32),
            scale=1.0,
            initial_state=state,
            return_final_state=True,
            backend="chunked",
        )
        return memory[0, 0], losses

    memory, losses = targets()
    block.memory[...] = memory
    return model, np.asarray(losses)
