"""The slow-weight measurements on trained backbones (research notes B.4): every write on fabricated facts from the
eval pool, each scored teacher-forced and autoregressively (memlab.slow_weights.score).

Per backbone and fact set (`Scale.facts` facts; the sequential documents A and B are its two halves):
  write       the facts written jointly by Adam on the slow memories through `memlab write` in a subprocess, then
              queried through `memlab query` in another (a cold reload): the logits must be bitwise identical
  block write Adam on the whole slow block (its address projection and gate too), at its own learning rate
  no write    the learned initial memory: chance
  shuffled    the written memory with its rows permuted: what the addresses find
  in context  the facts before each prompt, the memory unwritten: the upper bound of reading
  fine-tune   Adam on every weight with the same steps: the interference control
  delta       the one-shot delta-rule write (memlab.slow_weights.write.delta_write)
  sequential  A written, then B from A's memory: A's share right before and after B; contamination = the mass A's
              prompts put on B's answers, after the joint write and after the sequential one

Learning rates (the memory's write, the block's write, full fine-tuning) are searched per backbone on a train-pool
fact set, past whichever edge of their grid the best lies at (memlab.sweep.search).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import nnx
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from memlab.data.facts import document_text, make_facts, probe_rows, write_facts
from memlab.models.params import flat_params
from memlab.slow_weights.score import contamination, score, summary
from memlab.slow_weights.write import adam_write, delta_write, memory_names, row_length
from memlab.studies.slow_weights.protocol import Scale
from memlab.sweep.search import SearchRecord, search
from memlab.train.checkpoint import load_model
from memlab.train.param_blocks import apply_block, load_block

CONDITIONS = ("write", "block write", "no write", "shuffled", "in context", "fine-tune", "delta")


def _rank(s: dict) -> tuple:
    return (s["tf_exact"], s["ar_exact"], s["median_p_answer"])


def choose_lr(model, scale: Scale, knob: str, group: str, lrs, names=None) -> SearchRecord:
    """The learning rate whose write of the train-pool facts recalls most (teacher-forced, then autoregressive,
    then median p of the answer, then the lower final write loss), training the parameters `names` (default: the
    slow memories); searched past an edge of `lrs`."""
    facts = make_facts(scale.facts, "train", scale.lr_facts_seed)

    def rank(lr: float) -> tuple:
        written, losses = adam_write(model, facts, steps=scale.write_steps, lr=lr, names=names)
        return (*_rank(summary(score(written, facts))), -float(losses[-1]))

    return search(knob, group, lrs, rank, max_extensions=scale.lr_extensions)


def _cli(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "memlab.cli", *args], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"memlab {' '.join(args[:2])} failed: {out.stderr.strip()[-2000:]}")
    return out.stdout


def cold_reload(run_dir: Path, facts, lr: float, steps: int, work: Path) -> dict:
    """Write through `memlab write` (one process, saving the block and the facts' logits), query through `memlab
    query` (another process, loading run and block from disk): whether the logits are bitwise identical, and how
    long the write took (its own timing, kept in the block's manifest)."""
    work.mkdir(parents=True, exist_ok=True)
    write_facts(work / "facts.jsonl", facts)
    block, before, after = work / "block", work / "logits_written.npy", work / "logits_reloaded.npy"
    _cli("write", str(run_dir), "--facts", str(work / "facts.jsonl"), "--out", str(block), "--steps", str(steps),
         "--lr", str(lr), "--logits", str(before))  # fmt: skip
    _cli("query", str(run_dir), "--block", str(block), "--facts", str(work / "facts.jsonl"), "--logits", str(after),
         "--json", str(work / "scores.json"))  # fmt: skip
    a, b = np.load(before, allow_pickle=False), np.load(after, allow_pickle=False)
    return {
        "block": str(block),
        "identical": bool(a.shape == b.shape and a.tobytes() == b.tobytes()),
        "max_abs_diff": float(np.max(np.abs(a - b))),
        "write_seconds": load_block(block)[1]["source"]["seconds"],
    }


def _row(kind, seed, fact_seed, condition, s: dict) -> dict:
    keep = ("tf_exact", "ar_exact", "median_p_first", "median_p_answer", "right", "facts")
    return {"backbone": kind, "seed": seed, "fact_seed": fact_seed, "condition": condition,
            **{k: s[k] for k in keep}}  # fmt: skip


def evaluate_backbone(kind: str, seed: int, run_dir: Path, scale: Scale, work: Path) -> tuple[list, list, dict]:
    """(condition rows, sequential rows, chosen learning rates) of one backbone over the scale's fact sets."""
    model, _, _ = load_model(run_dir)
    everything = frozenset(flat_params(nnx.state(model, nnx.Param)))
    block_names = memory_names(model, "block")
    group = f"{kind} backbone, seed {seed}"
    searched = {
        "write": choose_lr(model, scale, "write lr", group, scale.write_lrs),
        "block": choose_lr(model, scale, "block write lr", group, scale.write_lrs, block_names),
        "finetune": choose_lr(model, scale, "fine-tune lr", group, scale.finetune_lrs, everything),
    }
    lr, block_lr, ft_lr = (searched[k].chosen for k in ("write", "block", "finetune"))
    rows, sequential = [], []
    for fs in scale.fact_seeds:
        facts = make_facts(scale.facts, "eval", fs)
        first, second = facts[: len(facts) // 2], facts[len(facts) // 2 :]
        reload = cold_reload(run_dir, facts, lr, scale.write_steps, work / f"{kind}-{seed}" / f"facts-{fs}")
        written = nnx.clone(model)
        apply_block(written, reload["block"])
        shuffled = nnx.clone(written)
        for block in shuffled.slow.values():
            block.memory[...] = block.memory[...][np.random.default_rng(fs).permutation(block.memory.shape[0])]
        finetuned, _ = adam_write(model, facts, steps=scale.write_steps, lr=ft_lr, names=everything)
        block, _ = adam_write(model, facts, steps=scale.write_steps, lr=block_lr, names=block_names)
        delta, _ = delta_write(model, facts)
        for condition, scores in (
            ("write", score(written, facts)),
            ("block write", score(block, facts)),
            ("no write", score(model, facts)),
            ("shuffled", score(shuffled, facts)),
            ("in context", score(model, facts, context=document_text(facts))),
            ("fine-tune", score(finetuned, facts)),
            ("delta", score(delta, facts)),
        ):
            rows.append(_row(kind, seed, fs, condition, summary(scores)))
            if condition == "write":
                rows[-1].update(
                    reload_identical=reload["identical"],
                    reload_max_abs_diff=reload["max_abs_diff"],
                    write_seconds=reload["write_seconds"],
                    address_cosine=address_cosine(model, facts),
                )
        after_a, _ = adam_write(model, first, steps=scale.write_steps, lr=lr)
        after_b, _ = adam_write(after_a, second, steps=scale.write_steps, lr=lr)
        a_before, a_after, b_after = (summary(score(m, f)) for m, f in ((after_a, first), (after_b, first),
                                                                          (after_b, second)))  # fmt: skip
        sequential.append({
            "backbone": kind, "seed": seed, "fact_seed": fs,
            "A_after_A": a_before["tf_exact"], "A_after_B": a_after["tf_exact"], "B_after_B": b_after["tf_exact"],
            "A_after_B_ar": a_after["ar_exact"],
            "retention": a_after["tf_exact"] / a_before["tf_exact"] if a_before["tf_exact"] else float("nan"),
            "contamination_joint": contamination(written, first, second),
            "contamination_sequential": contamination(after_b, first, second),
        })  # fmt: skip
    return rows, sequential, {k: r.to_json() for k, r in searched.items()}


def address_cosine(model, facts) -> float:
    """Mean cosine between the slow block's addresses of different facts at the position that reads the answer's
    first byte (the end of the prompt): near 1, every fact reads the same slots and no memory can tell them apart."""
    rows = probe_rows(facts, row_length(facts))
    q = np.asarray(model.slow_addresses(jnp.asarray(rows["inputs"]), model.slow_layers[0]))
    q = q[np.arange(len(facts)), rows["answer_start"]]
    unit = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    sims = unit @ unit.T
    return float((sims.sum() - np.trace(sims)) / (len(facts) * (len(facts) - 1)))


def measure(backbones: dict, scale: Scale, work: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Every backbone's rows, cached in `work/measurements.json` keyed by the backbones' run directories (the
    evaluation is deterministic: a rerun reads them back)."""
    cache = work / "measurements.json"
    key = {f"{k}/{s}": str(d) for (k, s), d in sorted(backbones.items())} | {"conditions": list(CONDITIONS), "lrs": 2}
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return pd.DataFrame(saved["rows"]), pd.DataFrame(saved["sequential"]), saved["lrs"]
    rows, sequential, lrs = [], [], {}
    for (kind, seed), run_dir in sorted(backbones.items()):
        r, s, chosen = evaluate_backbone(kind, seed, run_dir, scale, work)
        rows += r
        sequential += s
        lrs[f"{kind}/{seed}"] = chosen
    work.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "rows": rows, "sequential": sequential, "lrs": lrs}, indent=1))
    return pd.DataFrame(rows), pd.DataFrame(sequential), lrs


def draw(path: Path, rows: pd.DataFrame) -> None:
    """Exact match by condition and backbone, teacher-forced (filled) and autoregressive (hatched)."""
    fig = Figure(figsize=(9, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    means = rows.groupby(["condition", "backbone"])[["tf_exact", "ar_exact"]].mean()
    kinds = sorted(rows["backbone"].unique())
    width = 0.8 / (2 * len(kinds))
    for i, kind in enumerate(kinds):
        for j, metric in enumerate(("tf_exact", "ar_exact")):
            values = [means.loc[(c, kind), metric] if (c, kind) in means.index else np.nan for c in CONDITIONS]
            offset = (2 * i + j - len(kinds) + 0.5) * width
            label = f"{kind}, {'autoregressive' if j else 'teacher-forced'}"
            ax.bar(np.arange(len(CONDITIONS)) + offset, values, width, hatch="//" if j else None, color=f"C{i}",
                   alpha=0.6 if j else 0.9, label=label)  # fmt: skip
    ax.set_xticks(np.arange(len(CONDITIONS)), CONDITIONS)
    ax.set_ylabel("facts right (exact match)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("20 fabricated facts written into the slow block, queried after a cold reload")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
