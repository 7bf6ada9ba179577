"""What the slots learn: for a batch of context-QA eval examples, where each slot reads in the context, how much
of that lands on facts, how many slots each fact relies on, and whether slot vectors form per-slot clusters.

Needs the trained model (so it lives outside memlab.analysis). `probe_slots(run_dir)` writes slot_attention.png
(per-slot attention over context positions for one example, facts marked), slot_similarity.png (cosine
similarity of slot vectors) and slots.json / slots.md with the quantitative summary.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from memlab.data.tasks.context_qa import ContextQA
from memlab.train.checkpoint import load_model, run_config

RELY = 0.1  # a slot relies on a fact when the fact's span holds at least this share of the slot's attention


def load_trained(run_dir: Path) -> tuple[nnx.Module, ml_collections.ConfigDict, int]:
    """(slot-memory model with the newest checkpoint's parameters, config, step)."""
    config = run_config(run_dir)
    if config.model.name != "slot_memory":
        raise ValueError(f"{run_dir} trained model.name={config.model.name!r}; the slot probe needs slot_memory")
    return load_model(run_dir)


def slot_reads(model, context) -> tuple[np.ndarray, np.ndarray]:
    """Attention of every slot over the context in each slot layer [layers, B, k, L] (mean over heads) and the
    final slot vectors M_ctx [B, k, d]; the same computation as `encode_context`, keeping the weights."""
    memory = model.context_memory(context)
    read = model.read_args(memory)
    x = jnp.broadcast_to(model.slot_queries(), (context.shape[0], model.cfg.num_slots, model.cfg.d_model))
    reads = []
    for block in model.slot_blocks:
        for part, norm, layer in zip(block.parts, block.norms, block.layers, strict=True):
            h = norm(x)
            if part == "cross":
                probs, _ = layer.weights_and_values(h, memory, **read)
                reads.append(probs.mean(axis=1))
                x = x + layer(h, memory, **read)
            else:  # slot self-attention or MLP
                x = x + layer(h)
    return np.asarray(jnp.stack(reads)), np.asarray(model.slot_norm(x))


def fact_masks(task: ContextQA, indices) -> np.ndarray:
    """[B, n, L] indicator of each fact's span (key and value tokens) in each example's context."""
    cfg = task.cfg
    span = cfg.key_len + cfg.value_len
    masks = np.zeros((len(indices), cfg.num_facts, cfg.context_len), np.float32)
    for b, index in enumerate(indices):
        for f, start in enumerate(task.layout(index)["starts"]):
            masks[b, f, start : start + span] = 1.0
    return masks


def summarize(reads: np.ndarray, masks: np.ndarray, vectors: np.ndarray) -> dict:
    """Numbers from the last slot layer's reads [B, k, L], fact spans [B, n, L] and slot vectors [B, k, d]."""
    per_fact = np.einsum("bkl,bnl->bkn", reads, masks)  # share of each slot's attention on each fact
    relies = per_fact >= RELY
    on_facts = per_fact.sum(-1)
    unit = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)
    sim = np.einsum("bkd,cjd->bckj", unit, unit)  # [B, B, k, k]
    b, k = vectors.shape[:2]
    off_example = ~np.eye(b, dtype=bool)[:, :, None, None]
    same_slot = np.eye(k, dtype=bool)[None, None]
    best_fact = per_fact.argmax(-1)  # [B, k]
    return {
        "examples": int(b),
        "slots": int(k),
        "facts": int(masks.shape[1]),
        "rely_threshold": RELY,
        "attention_on_facts": float(on_facts.mean()),
        "fact_share_of_context": float(masks.sum((1, 2)).mean() / masks.shape[2]),
        "slots_per_fact": float(relies.sum(1).mean()),
        "facts_with_no_slot": float((relies.sum(1) == 0).mean()),
        "facts_per_slot": float(relies.sum(2).mean()),
        "slots_on_no_fact": float((relies.sum(2) == 0).mean()),
        "distinct_best_facts_per_example": float(np.mean([len(set(row)) for row in best_fact])),
        # clustering: is a slot's vector more like the same slot in other contexts than like other slots?
        "cosine_same_slot_across_contexts": float(sim[off_example & same_slot].mean()),
        "cosine_other_slots": float(sim[np.broadcast_to(~same_slot, sim.shape)].mean()),
        "nearest_centroid_is_own_slot": _own_centroid(unit),
    }


def _own_centroid(unit: np.ndarray) -> float:
    """Share of slot vectors whose nearest per-slot centroid (over all contexts) is their own slot's."""
    centroids = unit.mean(0)
    centroids = centroids / np.linalg.norm(centroids, axis=-1, keepdims=True)
    nearest = np.einsum("bkd,jd->bkj", unit, centroids).argmax(-1)
    return float((nearest == np.arange(unit.shape[1])[None]).mean())


def _heatmap(path: Path, reads: np.ndarray, mask: np.ndarray, title: str) -> None:
    fig = Figure(figsize=(10, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(reads, aspect="auto", cmap="viridis", interpolation="nearest")
    for start in mask.argmax(-1):  # first position of each fact's span
        ax.axvline(start - 0.5, color="white", lw=0.6, alpha=0.7)
    ax.set(xlabel="context position (white lines: fact starts)", ylabel="slot", title=title)
    fig.colorbar(image, ax=ax, label="attention")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _similarity(path: Path, vectors: np.ndarray) -> None:
    unit = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)
    flat = unit.transpose(1, 0, 2).reshape(-1, unit.shape[-1])  # ordered by slot, then example
    fig = Figure(figsize=(6, 5.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(flat @ flat.T, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set(
        title=f"slot vectors, cosine (blocks: slots, {unit.shape[0]} contexts each)",
        xlabel="slot x context",
        ylabel="slot x context",
    )
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def probe_slots(run_dir: str | Path, *, examples: int = 32, out: str | Path | None = None) -> Path:
    """Write the heatmaps and summary for `examples` eval examples of a trained slot-memory run; returns slots.md."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "slots"
    out.mkdir(parents=True, exist_ok=True)
    model, config, step = load_trained(run_dir)
    task = ContextQA(config.data, "eval", config.data.seed)
    indices = list(range(examples))
    context = jnp.asarray(np.stack([task[i]["context"] for i in indices]))
    reads, vectors = slot_reads(model, context)
    masks = fact_masks(task, indices)
    summary = {"run": str(run_dir), "step": step, **summarize(reads[-1], masks, vectors)}
    _heatmap(
        out / "slot_attention.png",
        reads[-1][0],
        masks[0],
        f"slot attention over the context (last slot layer, eval example 0, step {step})",
    )
    _similarity(out / "slot_similarity.png", vectors)
    (out / "slots.json").write_text(json.dumps(summary, indent=2))
    lines = [f"# What the slots learn ({run_dir.name}, step {step})", "", "| quantity | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in summary.items()]
    lines += ["", "![slot attention](slot_attention.png)", "", "![slot similarity](slot_similarity.png)", ""]
    path = out / "slots.md"
    path.write_text("\n".join(lines))
    return path
