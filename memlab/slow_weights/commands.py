"""`memlab write RUN_DIR --facts FILE --out BLOCK` writes facts into a run's slow block and saves the block;
`memlab query RUN_DIR --block BLOCK --prompt TEXT | --facts FILE` loads the run and the block in this (fresh)
process and answers without the facts in context."""

from __future__ import annotations

import argparse
import hashlib
import json
import time

METHODS = ("adam", "delta")


def register(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("write", help="write facts into a run's slow block (backbone frozen) and save the block")
    w.add_argument("run_dir", help="a BDH run directory with model.slow_layers (e.g. experiments/slow_weights.py)")
    w.add_argument("--facts", required=True, help="JSON-lines facts file (make one with `memlab data facts`)")
    w.add_argument("--out", required=True, help="directory of the written block (a verified snapshot)")
    w.add_argument("--method", choices=METHODS, default="adam", help="adam: Adam on the memories; delta: one pass")
    w.add_argument("--steps", type=int, default=300, help="Adam steps (default 300)")
    w.add_argument(
        "--train",
        choices=("memory", "block"),
        default="memory",
        help="adam: train the slow memories (default) or the whole slow block (address and gate too)",
    )
    w.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default 1e-2)")
    w.add_argument("--contrastive", type=float, default=0.0, help="weight of the InfoNCE term over facts (default 0)")
    w.add_argument("--from-block", default=None, help="start from this written block (a second document)")
    w.add_argument("--logits", default=None, help="save the facts' probe logits after writing here (.npy)")
    w.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    w.set_defaults(func=write)
    q = sub.add_parser("query", help="answer prompts from a run with a written slow block, without the document")
    q.add_argument("run_dir", help="the run the block was written on")
    q.add_argument("--block", default=None, help="a block from `memlab write` (default: the run's own memory)")
    what = q.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help='text to continue, e.g. "Basik fears "')
    what.add_argument("--facts", help="score every fact of this file (exact match, p)")
    q.add_argument("--tokens", type=int, default=16, help="--prompt: bytes to generate at most (stops at '.')")
    q.add_argument("--json", default=None, help="--facts: write the per-fact scores here")
    q.add_argument("--logits", default=None, help="--facts: save the probe logits here (.npy)")
    q.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    q.set_defaults(func=query)


def _load(run_dir, step, block):
    from memlab.train.checkpoint import load_model
    from memlab.train.param_blocks import apply_block

    model, config, step = load_model(run_dir, step)
    if block:
        apply_block(model, block)
    return model, config, step


def _report(scores: dict) -> str:
    from memlab.slow_weights.score import summary

    s = summary(scores)
    return (
        f"{s['right']}/{s['facts']} right teacher-forced, {s['ar_exact']:.0%} autoregressive, "
        f"median p(first byte) {s['median_p_first']:.4f}, median p(answer) {s['median_p_answer']:.4f}"
    )


def write(args) -> int:
    from pathlib import Path

    import numpy as np

    from memlab.data.facts import read_facts
    from memlab.slow_weights.score import score
    from memlab.slow_weights.write import SLOW, adam_write, delta_write, memory_names
    from memlab.train.param_blocks import save_block

    facts = read_facts(args.facts)
    model, config, step = _load(args.run_dir, args.step, args.from_block)
    names = memory_names(model, args.train)  # a clear error for a run without a slow block, before any compute
    start = time.perf_counter()
    if args.method == "adam":
        model, losses = adam_write(
            model, facts, steps=args.steps, lr=args.lr, contrastive=args.contrastive, names=names
        )
    else:
        model, losses = delta_write(model, facts)
    seconds = time.perf_counter() - start  # the losses came back to the host: the write has finished
    scores = score(model, facts)
    meta = {
        "run_dir": str(Path(args.run_dir).resolve()),
        "step": step,
        "method": args.method,
        "train": args.train,
        "steps": args.steps,
        "lr": args.lr,
        "contrastive": args.contrastive,
        "from_block": args.from_block,
        "facts": {
            "file": str(args.facts),
            "count": len(facts),
            "sha256": hashlib.sha256(Path(args.facts).read_bytes()).hexdigest(),
        },
        "loss": {"first": float(losses[0]), "last": float(losses[-1])},
        "seconds": seconds,  # the write itself (compilation included), not loading or scoring
    }
    save_block(model, SLOW, args.out, meta=meta)
    if args.logits:
        np.save(args.logits, scores["logits"], allow_pickle=False)
    print(
        f"memlab: wrote {len(facts)} facts into {SLOW!r} of {args.run_dir} step {step} ({args.method}, loss "
        f"{losses[0]:.4f} -> {losses[-1]:.4f}); saved {args.out}"
    )
    print(f"memlab: {_report(scores)}")
    return 0


def query(args) -> int:
    import jax.numpy as jnp
    import numpy as np

    from memlab.data.facts import read_facts
    from memlab.data.tokenizer import ByteTokenizer
    from memlab.errors import ConfigError
    from memlab.slow_weights.score import score

    model, config, step = _load(args.run_dir, args.step, args.block)
    if args.prompt is not None:
        if not args.prompt or args.tokens < 1:
            raise ConfigError("--prompt needs at least one character and --tokens >= 1")
        prompt = ByteTokenizer().encode_batch([args.prompt])[0]
        out = np.asarray(model.generate(jnp.asarray(prompt[None]), args.tokens))[0, len(prompt) :]
        text = ByteTokenizer().decode(out)
        print(text[: text.index(".") + 1] if "." in text else text)
        return 0
    facts = read_facts(args.facts)
    scores = score(model, facts)
    if args.logits:
        np.save(args.logits, scores["logits"], allow_pickle=False)
    if args.json:
        rows = [
            {
                "prompt": f.prompt,
                "answer": f.answer,
                **{k: scores[k][i].item() for k in ("tf_exact", "ar_exact", "p_first", "p_answer")},
            }
            for i, f in enumerate(facts)
        ]
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    print(f"memlab: {args.run_dir} step {step} with block {args.block}: {_report(scores)}")
    return 0
