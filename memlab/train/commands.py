"""`memlab train CONFIG --set k=v ... --workdir DIR`, `memlab evaluate RUN_DIR --set k=v`, `memlab generate RUN_DIR
--prompt "ids"` and
`memlab params save|load`: one sub-tree of a run's parameters saved as a verified block, and a block placed
onto the model of a run directory (optionally scored on the run's eval set before and after)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one run (resumes if the workdir has checkpoints)")
    p.add_argument("config", help="experiment file defining get_config(), e.g. experiments/mqar.py")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set model.d_model=64 (repeatable)",
    )
    p.add_argument("--workdir", required=True, help="run directory (config.json, metrics.jsonl, checkpoints/ ...)")
    p.set_defaults(func=run)
    g = sub.add_parser("generate", help="greedy decoding from a run's checkpoint through the one-token step")
    g.add_argument("run_dir", help="a run directory with checkpoints/")
    g.add_argument("--prompt", required=True, help='token ids separated by spaces, e.g. "3 40 5 41"')
    g.add_argument("--tokens", type=int, default=16, help="how many tokens to generate (default 16)")
    g.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    g.set_defaults(func=generate)
    e = sub.add_parser("evaluate", help="score a run's checkpoint on its eval set, or another task's, or with changes")
    e.add_argument("run_dir", help="a run directory with checkpoints/")
    e.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change data, eval or evaluation-time model knobs, e.g. --set data.task=text --set data.path=DIR",
    )
    e.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    e.set_defaults(func=evaluate_checkpoint)
    params = sub.add_parser("params", help="save a parameter block of a run; place one onto a run's model")
    actions = params.add_subparsers(dest="action", required=True)
    save = actions.add_parser("save", help="save the parameters under --prefix of a run's checkpoint as a block")
    save.add_argument("run_dir", help="a run directory with checkpoints/")
    save.add_argument("--prefix", required=True, help="the sub-tree to save, e.g. blocks/1/mixer")
    save.add_argument("--out", required=True, help="directory of the block (a verified zarr snapshot)")
    save.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    save.set_defaults(func=save_params)
    load = actions.add_parser("load", help="place a saved block onto a run's model (checked whole, never partly)")
    load.add_argument("run_dir", help="a run directory with checkpoints/")
    load.add_argument("--block", required=True, help="directory written by `memlab params save`")
    load.add_argument("--prefix", default=None, help="where to place it (default: the prefix it was saved from)")
    load.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    load.add_argument("--eval", action="store_true", help="the run's eval metrics before and after placing it")
    load.set_defaults(func=load_params)


def run(args: argparse.Namespace) -> int:
    from memlab.config import load_config
    from memlab.parallel import maybe_initialize_distributed
    from memlab.train.loop import Interrupted, NonFiniteError, train

    config = load_config(args.config, args.set)
    maybe_initialize_distributed(config.mesh)
    try:
        summary = train(config, args.workdir)
    except NonFiniteError as err:
        print(f"memlab: training stopped: {err}", file=sys.stderr)
        return 1
    except Interrupted as err:
        print(f"memlab: {err}", file=sys.stderr)
        return 130
    keys = ("step", "eval/loss", "eval/accuracy", "eval/bits_per_byte", "wall_seconds")
    shown = {k: summary[k] for k in keys if k in summary}
    print(
        f"memlab: {summary['status']} {args.workdir} "
        + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
    )
    return 0


def generate(args) -> int:
    import jax.numpy as jnp

    from memlab.errors import ConfigError
    from memlab.train.checkpoint import load_model

    try:
        prompt = [int(t) for t in args.prompt.split()]
    except ValueError:
        raise ConfigError(f'--prompt {args.prompt!r} must be token ids separated by spaces, e.g. "3 40 5 41"') from None
    model, config, step = load_model(args.run_dir, args.step)
    if not hasattr(model, "generate"):
        raise ConfigError(f"model.name={config.model.name!r} has no decoder-only generation; only 'lm' runs decode")
    vocab = config.data.vocab_size
    if not prompt or args.tokens < 1 or any(not 0 <= t < vocab for t in prompt):
        raise ConfigError(
            f"--prompt needs >= 1 token id in [0, {vocab}) and --tokens >= 1 "
            f"(got {len(prompt)} ids, --tokens {args.tokens})"
        )
    out = model.generate(jnp.asarray([prompt], jnp.int32), args.tokens)
    print(f"step {step}: " + " ".join(str(int(t)) for t in out[0, len(prompt) :]))
    return 0


def evaluate_checkpoint(args) -> int:
    from memlab.train.evaluate import evaluate_run

    for key, value in sorted(evaluate_run(args.run_dir, args.set, args.step).items()):
        print(f"{key}: {value:.6g}")
    return 0


def save_params(args) -> int:
    from pathlib import Path

    from memlab.config import to_dict
    from memlab.train.checkpoint import load_model
    from memlab.train.param_blocks import save_block

    model, config, step = load_model(args.run_dir, args.step)
    source = {"run_dir": str(Path(args.run_dir).resolve()), "step": step, "model": to_dict(config.model)}
    block = save_block(model, args.prefix, args.out, meta=source)
    size = f"{len(block)} arrays, {sum(a.size for a in block.values())} values"
    print(f"memlab: saved {args.prefix!r} of {args.run_dir} step {step} to {args.out} ({size})")
    return 0


def load_params(args) -> int:
    from memlab.train.checkpoint import load_model
    from memlab.train.evaluate import evaluate_model
    from memlab.train.param_blocks import apply_block

    model, config, step = load_model(args.run_dir, args.step)
    before = evaluate_model(model, config) if args.eval else None
    prefix = apply_block(model, args.block, args.prefix)
    print(f"memlab: placed block {args.block} onto {prefix!r} of {args.run_dir} step {step}")
    if before is not None:
        after = evaluate_model(model, config)
        for key in ("eval/loss", "eval/accuracy"):
            print(f"{key}: {before[key]:.6g} before, {after[key]:.6g} after")
    return 0
