"""What a model recalls of facts, read from its logits on each fact's probe (prompt + answer + "."):

- teacher-forced exact match: the argmax is the answer's byte at every answer position, the true bytes fed;
- autoregressive exact match: the answer greedily generated from the prompt alone, byte by byte, equals it (the
  anchor's bug 5 was to trust one of the two; a large gap between them means a leak, not a scorer problem);
- p: the probability of the answer's first byte after the prompt, and of the whole answer (teacher-forced);
- contamination: the probability mass a prompt puts on another document's answers.

Rows are scored in one batch; generation is a `lax.fori_loop` over the answer's bytes, each step a parallel
forward of every row (the answers start at different positions, which a lockstep decoding cache cannot serve).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from memlab.data.facts import Fact, probe_rows
from memlab.slow_weights.write import row_length


def _rows(facts: list[Fact], context: str = "") -> dict[str, jax.Array]:
    """Probe rows, each preceded by the bytes of `context` (the facts-in-context control) when given."""
    rows = probe_rows(facts, row_length(facts))
    if context:
        prefix = np.frombuffer(context.encode("utf-8"), np.uint8).astype(np.int32)
        n = len(prefix)
        for name in ("inputs", "targets", "mask"):
            fill = prefix if name == "inputs" else np.zeros(n, rows[name].dtype)  # the context is never scored
            rows[name] = np.concatenate([np.broadcast_to(fill, (len(facts), n)), rows[name]], 1)
        rows["answer_start"] = rows["answer_start"] + n
    return {k: jnp.asarray(v) for k, v in rows.items()}


@nnx.jit
def _teacher_forced(model, inputs, targets, mask, start):
    logits = model.logits(inputs)
    logp = jax.nn.log_softmax(logits, -1)
    true = jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]
    right = (jnp.argmax(logits, -1) == targets) | (mask == 0)
    first = jnp.take_along_axis(true, start[:, None], 1)[:, 0]
    return logits, right.all(-1), jnp.exp(first), jnp.exp((true * mask).sum(-1))


@nnx.jit(static_argnames="longest")
def _generated(model, inputs, start, length, longest: int):
    """Greedy answers: at answer byte j every row's argmax after position start + j is written into the row."""
    rows = jnp.arange(inputs.shape[0])

    def body(j, tokens):
        pick = jnp.argmax(model.logits(tokens)[rows, start + j], -1).astype(tokens.dtype)
        live = j < length
        return tokens.at[rows, start + j + 1].set(jnp.where(live, pick, tokens[rows, start + j + 1]))

    cleared = jnp.where(jnp.arange(inputs.shape[1]) > start[:, None], 0, inputs)  # nothing of the answer is fed
    return jax.lax.fori_loop(0, longest, body, cleared)


def score(model: nnx.Module, facts: list[Fact], context: str = "") -> dict[str, np.ndarray]:
    """Per fact: `tf_exact` and `ar_exact` (bool), `p_first` and `p_answer` (float), and `logits` [F, L, V] of the
    teacher-forced rows (for bitwise comparisons); with `context`, each probe is preceded by it."""
    rows = _rows(facts, context)
    logits, tf, p_first, p_answer = _teacher_forced(
        model, rows["inputs"], rows["targets"], rows["mask"], rows["answer_start"]
    )
    longest = int(rows["answer_len"].max())
    out = _generated(model, rows["inputs"], rows["answer_start"], rows["answer_len"], longest)
    index = rows["answer_start"][:, None] + 1 + jnp.arange(longest)[None, :]
    answer_pos = jnp.arange(longest)[None, :] < rows["answer_len"][:, None]
    got = jnp.take_along_axis(out, jnp.minimum(index, out.shape[1] - 1), 1)
    want = jnp.take_along_axis(rows["inputs"], jnp.minimum(index, out.shape[1] - 1), 1)
    ar = ((got == want) | ~answer_pos).all(-1)
    return {
        "tf_exact": np.asarray(tf),
        "ar_exact": np.asarray(ar),
        "p_first": np.asarray(p_first),
        "p_answer": np.asarray(p_answer),
        "logits": np.asarray(logits),
    }


def summary(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """Shares of facts right (teacher-forced, autoregressive), median p of the first byte and of the answer."""
    return {
        "tf_exact": float(np.mean(scores["tf_exact"])),
        "ar_exact": float(np.mean(scores["ar_exact"])),
        "median_p_first": float(np.median(scores["p_first"])),
        "median_p_answer": float(np.median(scores["p_answer"])),
        "right": int(np.sum(scores["tf_exact"])),
        "facts": int(len(scores["tf_exact"])),
    }


def contamination(model: nnx.Module, queried: list[Fact], other: list[Fact]) -> float:
    """Mean over the `queried` prompts of the probability mass (teacher-forced, whole answer) they put on the
    answers of the `other` document: sum over its answers of p(answer | prompt)."""
    pairs = [Fact(q.subject, q.relation, o.object) for q in queried for o in other]
    rows = _rows(pairs)
    _, _, _, p_answer = _teacher_forced(model, rows["inputs"], rows["targets"], rows["mask"], rows["answer_start"])
    return float(np.asarray(p_answer).reshape(len(queried), len(other)).sum(1).mean())
