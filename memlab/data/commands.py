"""`memlab data prepare --source SRC --out DIR`, `memlab data verify DIR` and `memlab data facts --out FILE`."""

from __future__ import annotations

SOURCE_HELP = ("stdlib (this Python's standard library .py files), a file, a directory, a quoted glob, "
               "or hf:NAME[:CONFIG] (a Hugging Face dataset, streamed)")


def register(sub) -> None:
    data = sub.add_parser("data", help="prepare and check tokenised text corpora").add_subparsers(
        dest="data_command", required=True)
    p = data.add_parser("prepare", help="tokenise a corpus into train/validation shards with a manifest")
    p.add_argument("--source", required=True, help=SOURCE_HELP)
    p.add_argument("--out", required=True, help="directory to write (shards, tokenizer, manifest.json)")
    p.add_argument("--tokenizer", default="byte", choices=("byte", "bpe"),
                   help="byte: UTF-8 bytes, no training; bpe: byte-level BPE trained on the train split")
    p.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size (with --tokenizer bpe)")
    p.add_argument("--tokenizer-sample-mb", type=float, default=8.0,
                   help="megabytes of train text the BPE is trained on (with --tokenizer bpe)")
    p.add_argument("--validation-fraction", type=float, default=0.05,
                   help="share of documents (by hash of their path or index) held out for validation")
    p.add_argument("--max-docs", "--max-files", dest="max_docs", type=int, default=None,
                   help="keep only the first N documents (stdlib: a deterministic sample of N files)")
    p.add_argument("--text-field", default="text", help="field holding the text in .jsonl and hf: rows")
    p.add_argument("--hf-split", default="train", help="which split of an hf: dataset to stream")
    p.add_argument("--force", action="store_true", help="replace a directory prepared with other options")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_prepare)
    v = data.add_parser("verify", help="check every shard of a prepared directory against its manifest")
    v.add_argument("dir", help="a directory written by memlab data prepare")
    v.set_defaults(func=run_verify)
    f = data.add_parser("facts", help="write a file of fabricated facts (JSON lines) for slow-memory writes")
    f.add_argument("--n", type=int, default=20, help="number of facts (distinct subjects, distinct objects)")
    f.add_argument("--pool", default="eval", choices=("train", "eval"),
                   help="word pool: eval words never appear in the train pool that training episodes draw from")
    f.add_argument("--seed", type=int, default=0, help="the facts are a pure function of (pool, seed)")
    f.add_argument("--out", required=True, help="the facts file to write (JSON lines)")
    f.set_defaults(func=run_facts)


def run_prepare(args) -> int:
    from memlab.data.prepare import prepare

    done = prepare(args.source, args.out, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                   validation_fraction=args.validation_fraction, max_docs=args.max_docs, text_field=args.text_field,
                   hf_split=args.hf_split, tokenizer_sample_mb=args.tokenizer_sample_mb, force=args.force,
                   progress=not args.no_progress)
    state = "up to date (checksums verified, nothing written)" if done.reused else "prepared"
    print(f"memlab: {state} {done.directory} in {done.seconds:.1f}s")
    print(describe(done.manifest))
    return 0


def run_verify(args) -> int:
    from memlab.data import manifest as mf

    manifest = mf.load(args.dir)
    mf.verify(args.dir, manifest, "sha256")
    print(f"memlab: {args.dir}: all {len(manifest['files'])} files match {mf.MANIFEST}")
    print(describe(manifest))
    return 0


def run_facts(args) -> int:
    from pathlib import Path

    from memlab.data.facts import make_facts, write_facts
    from memlab.errors import ConfigError

    if args.n < 1:
        raise ConfigError(f"--n {args.n} must be at least 1 fact")
    if args.seed < 0:
        raise ConfigError(f"--seed {args.seed} must be a non-negative integer")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: the directory {out.parent} does not exist")
    facts = make_facts(args.n, args.pool, args.seed)
    write_facts(out, facts)
    print(f"memlab: wrote {len(facts)} {args.pool} facts (seed {args.seed}) to {out}")
    for fact in facts[:3]:
        print(f"  {fact.line}", end="")
    return 0


def describe(manifest: dict) -> str:
    """The counts a user checks after prepare: per split documents, tokens, bytes and bytes per token."""
    tok = manifest["tokenizer"]
    lines = [f"  source     {manifest['source']}",
             f"  tokenizer  {tok['kind']} (vocab {tok['vocab_size']}, eos {tok['eos_id']})"]
    if manifest["skipped"]:
        lines.append("  skipped    " + ", ".join(f"{n} {why}" for why, n in manifest["skipped"].items()))
    lines.append(f"  {'split':<11}{'documents':>10}{'tokens':>14}{'bytes':>14}{'bytes/token':>13}")
    splits = manifest["splits"]
    for name, c in [*splits.items(), ("total", {k: sum(s[k] for s in splits.values())
                                                for k in ("documents", "tokens", "bytes")})]:
        lines.append(f"  {name:<11}{c['documents']:>10,}{c['tokens']:>14,}{c['bytes']:>14,}"
                     f"{c['bytes'] / max(c['tokens'], 1):>13.3f}")
    return "\n".join(lines)

