"""What the δ-mem protocol's runs measure: every model scored on the same evaluation episodes (beyond the window
by distance and by number of facts, inside the window) and on stdlib text, exact match of single-token answers
and bits per byte, plus the retrieval baseline and the zeroed-state ablation.

Rows: the frozen backbone; the backbone reading a retrieved window (the earlier window holding the queried key,
prepended inside the last one); each adapter run (one per kind and seed); each δ-mem run with its state zeroed at
read; the oracle. The retrieval baseline needs no training: it is the backbone on transformed batches.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from flax import nnx

from memlab.data.tasks.window_recall import retrieve_batch
from memlab.models import build_model
from memlab.models.adapters import STATE_HEADS
from memlab.studies.delta_mem.protocol import Scale, adapter_of, backbone_dir, chosen_runs, corpus, episode
from memlab.sweep.stages import Study
from memlab.train.checkpoint import load_model
from memlab.train.evaluate import evaluate_changed
from memlab.train.run_dir import RunDir


def conditions(scale: Scale, text: Path) -> dict[str, list[str]]:
    """Evaluation conditions: name -> overrides of a run's config."""

    def at(**kw) -> list[str]:
        return [f"{k}={v}" for k, v in episode(scale, text, **kw).items()] + [
            f"eval.num_examples={scale.eval_examples}",
            f"eval.batch_size={min(64, scale.eval_examples)}",
            "data.text_fraction=0.0",
        ]

    out = {"beyond": at(distance=-1)}
    out.update({f"distance={d}": at(distance=d) for d in range(1, scale.windows)})
    out.update({f"facts={n}": at(distance=-1, facts=n) for n in scale.fact_counts if n != scale.facts})
    out["in-window"] = at(distance=0)
    out["text"] = [
        "data.task=text",
        f"data.path={text}",
        f"data.seq_len={scale.window * scale.windows}",
        "data.packing=concat",
        f"eval.num_examples={scale.eval_examples}",
        f"eval.batch_size={min(64, scale.eval_examples)}",
        "objective.next_token=1.0",
        "objective.answer=0.0",
        "objective.delta_mem_beta=0.0",
    ]
    return out


def _score(model, config, overrides: list[str], transform=None, extra: tuple[str, ...] = ()) -> float:
    is_text = "data.task=text" in overrides
    scores = evaluate_changed(model, config, [*overrides, *extra], transform=None if is_text else transform)
    return scores["eval/bits_per_byte"] if is_text else scores["eval/exact_match"]


def forward_flops_per_token(config) -> float:
    model = nnx.eval_shape(lambda: build_model(config.model, config.train.seed))
    tokens = config.data.window * config.data.num_windows
    return model.forward_flops_per_example({"inputs": (tokens,)}) / tokens


def state_per_layer(config) -> int:
    """Numbers one attention layer carries when decoding: keys and values of the tokens its window can see, plus
    the δ-mem state (state heads x r x r)."""
    model, tokens = config.model, config.data.window * config.data.num_windows
    seen = model.attention_window or tokens
    delta = STATE_HEADS[model.delta_mem] * model.delta_mem_rank**2 if model.get("delta_mem", "") else 0
    return 2 * seen * model.d_model + delta


def _row(model: str, run_dir: Path, seed: int, scale: Scale, text: Path, transform=None, extra=()) -> dict:
    """One model's scores on every condition, from one load of its checkpoint."""
    summary = RunDir(run_dir).read_summary()
    loaded, config, _ = load_model(run_dir)
    row = {"model": model, "seed": seed, "run_dir": str(run_dir)}
    for name, overrides in conditions(scale, text).items():
        if name == "text" and transform is not None:
            continue  # retrieval changes episodes only
        row[name] = _score(loaded, config, overrides, transform, extra)
    row["params_trainable"] = summary.get("params_trainable", summary.get("params"))
    row["params"] = summary.get("params")
    row["state_per_layer"] = state_per_layer(config)
    row["forward_flops_per_token"] = forward_flops_per_token(config)
    return row


def measure(study: Study, scale: Scale) -> pd.DataFrame:
    """One row per (model, seed): every condition's score and the model's size, trainable share and cost."""
    runs = study.runs
    text = corpus(runs)
    backbone = backbone_dir(runs)
    retrieve = partial(_retrieved, window=scale.window)
    rows = [
        _row("backbone", backbone, 0, scale, text),
        {**_row("retrieval", backbone, 0, scale, text, transform=retrieve), "params_trainable": 0},
        _row("oracle", runs / "backbones" / "model=oracle", 0, scale, text),
    ]
    for _, run in chosen_runs(study).iterrows():
        kind, seed = adapter_of(run), int(run["train.seed"])
        rows.append(_row(kind, Path(run["run_dir"]), seed, scale, text))
        if kind != "lora":
            zeroed = ("model.delta_mem_read=zero",)
            rows.append(_row(f"{kind} zeroed", Path(run["run_dir"]), seed, scale, text, extra=zeroed))
    return pd.DataFrame(rows)


def _retrieved(batch: dict, window: int) -> dict:
    return jax.tree.map(np.asarray, retrieve_batch(batch, window))
