"""Named passes: views of an example that the model runs on, each scored by the objectives that name it.

An objective key `name@pass` scores the outputs of the pass `pass` with the objective `name`, at its own weight,
logged as `loss/name@pass`; a bare `name` scores the example as it comes (the pass ""). A pass runs once per step
however many objectives score it, and only if one of them has a positive weight: a weight of 0 removes its cost,
so an objective-mix sweep can take a pass in and out without changing anything else.

A pass is a function batch -> batch registered in `memlab.registry.PASSES`; it returns the whole view, passing
through the example's fields it leaves alone.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from memlab.registry import PASSES

MAIN = ""  # the example as it comes


def split_key(key: str) -> tuple[str, str]:
    """`"next_token@copy"` -> ("next_token", "copy"); `"answer"` -> ("answer", "")."""
    name, _, pass_name = key.partition("@")
    return name, pass_name


def active(weights: dict) -> list[str]:
    """The passes some positively weighted objective scores, the main one first."""
    names = {split_key(k)[1] for k, w in weights.items() if w > 0}
    return sorted(names, key=lambda n: (n != MAIN, n))


def view(name: str, batch: dict) -> dict:
    return batch if name == MAIN else PASSES.get(name)(batch)


def run(model, batch: dict, names: list[str]) -> dict[str, tuple[dict, dict]]:
    """{pass: (the model's outputs on its view, the view)} for each pass in `names`."""
    out = {}
    for name in names:
        seen = view(name, batch)
        out[name] = (model(seen), seen)
    return out


def view_shapes(name: str, shapes: dict) -> dict:
    """Per-example shapes of a pass's view (a view may change lengths; the FLOP count follows them)."""
    if name == MAIN:
        return shapes
    batch = {k: jax.ShapeDtypeStruct((1, *s), jnp.int32) for k, s in shapes.items()}
    return {k: v.shape[1:] for k, v in jax.eval_shape(lambda b: view(name, b), batch).items()}


@PASSES.register("copy")
def copy(batch: dict) -> dict:
    """The retention view of a token sequence: its first half, then the first half again, scored only where it
    repeats (the first token of the repeat is not: nothing says where it starts). A causal model must carry the
    first half forward to predict the second: the copy objective of memory models (Badger's `copy`), here
    teacher-forced. Shapes are kept; packed documents become one sequence (segment ids and positions go)."""
    if "inputs" not in batch or "targets" not in batch:
        raise ValueError(f"the copy pass needs a token sequence (inputs, targets); this example has {sorted(batch)}")
    inputs, targets = batch["inputs"], batch["targets"]
    t = inputs.shape[1]
    h = t // 2
    valid = batch.get("token_mask", jnp.ones_like(targets, jnp.float32)).astype(jnp.float32)
    mask = jnp.concatenate([jnp.zeros_like(valid[:, :h]), valid[:, : t - h]], axis=1)
    out = {
        "inputs": jnp.concatenate([inputs[:, :h], inputs[:, : t - h]], axis=1),
        "targets": jnp.concatenate([targets[:, : h - 1], inputs[:, :1], targets[:, : t - h]], axis=1),
        "token_mask": mask,
        "loss_mask": mask,
    }
    return {**{k: v for k, v in batch.items() if k not in ("segment_ids", "positions")}, **out}


@PASSES.register("blank_copy")
def blank_copy(batch: dict) -> dict:
    """The copy view with the repeat hidden: the second half's inputs are DELIMITER at the boundary, then BLANK
    (the ids the example's task reserves after its tokeniser's, in `reserved_ids`), so its targets, the first half
    again, can only come from what a model
    carried over. For a memory model with an even number of chunks the halves are whole chunks, and the decoder of
    chunk n/2 + j must regenerate chunk j from its memory alone (Badger's `blank_copy`). Scored as the copy view:
    the repeat only, where the example's token_mask allows. Built from new arrays; the batch is left as it was."""
    if "reserved_ids" not in batch:
        raise ValueError(
            "the blank_copy pass writes the DELIMITER and BLANK ids a task reserves (`reserved_ids`, e.g. the "
            f"text_chunks task's); this example has {sorted(batch)}"
        )
    out = copy(batch)
    t = out["inputs"].shape[1]
    position = jnp.arange(t)
    delimiter, blank = batch["reserved_ids"][:, :1], batch["reserved_ids"][:, 1:2]
    hidden = jnp.where(position == t // 2, delimiter, blank).astype(out["inputs"].dtype)
    return {**out, "inputs": jnp.where(position >= t // 2, hidden, out["inputs"])}


EPISODE_FIELDS = {
    "episode_doc_inputs": "doc_inputs",
    "episode_doc_targets": "doc_targets",
    "episode_doc_mask": "doc_mask",
    "episode_probe_inputs": "inputs",
    "episode_probe_targets": "targets",
    "episode_probe_mask": "loss_mask",
}
TEXT_FIELDS = ("inputs", "targets", "segment_ids", "positions", "token_mask")


@PASSES.register("episode")
def episode(batch: dict) -> dict:
    """The meta-test-time-training view of a fact episode (the fact_episodes task): the document rows to write a
    slow memory from (`doc_inputs`, `doc_targets`, `doc_mask`, [B, F, doc_len]) and the probes asked without the
    document (`inputs`, `targets` and `loss_mask`, 1 on the answer targets, [B, F, probe_len]). The example's text
    window (inputs, targets, token_mask, segment_ids, positions) is dropped; any other field passes through."""
    missing = [k for k in EPISODE_FIELDS if k not in batch]
    if missing:
        raise ValueError(
            f"the episode pass needs the fields of a fact episode ({', '.join(missing)} missing; the fact_episodes "
            f"task makes them); this example has {sorted(batch)}"
        )
    rest = {k: v for k, v in batch.items() if k not in TEXT_FIELDS and k not in EPISODE_FIELDS}
    return {**rest, **{new: batch[old] for old, new in EPISODE_FIELDS.items()}}
