"""`memlab train CONFIG --set k=v ... --workdir DIR` and `memlab generate RUN_DIR --prompt "ids"`."""

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
