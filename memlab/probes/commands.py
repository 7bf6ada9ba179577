"""`memlab probe-memory RUN_DIR`: how much of its input window a run's frozen embedding holds (I_e, the calibrated
I_e' and Hamming accuracy of a fresh decoder regenerating the window from it; memlab.probes.memory_info)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "probe-memory",
        help="a fresh unrolled decoder on a run's frozen encoder: memory_info.json (CE, I_e, I_e', Hamming)",
    )
    p.add_argument("run_dir", help="a memory_model or attention lm run directory with checkpoints/")
    p.add_argument(
        "--encoder",
        default="run",
        choices=("run", "untrained", "constant"),
        help="the run's encoder (default), a fresh one of its config, or a constant embedding (gives CE_null)",
    )
    p.add_argument("--steps", type=int, default=1000, help="probe decoder training steps (default 1000)")
    p.add_argument(
        "--workdir",
        default=None,
        help="where the probe runs and memory_info.json go (default RUN_DIR/probe_memory; for a control "
        "RUN_DIR/probe_memory_<encoder>)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a probe config value, e.g. --set data.seq_len=64 --set train.lr=1e-3 (repeatable)",
    )
    p.add_argument(
        "--ce-null",
        type=float,
        default=None,
        help="CE of the constant control (e.g. from an earlier memory_info.json) instead of training it",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from memlab.probes.memory_info import probe_memory

    info = probe_memory(
        args.run_dir, args.encoder, steps=args.steps, workdir=args.workdir, overrides=args.set, ce_null=args.ce_null
    )
    print(json.dumps(info, indent=2))
    return 0
