"""`prepare`: a corpus source -> tokeniser -> train/validation token shards + manifest, in one directory.

The directory is built beside its final place and renamed into it only when complete, so an interrupted
prepare never leaves a directory that looks finished. Re-running with the same request on an intact directory
does nothing (it verifies every checksum and reports the recorded counts); a damaged one is rebuilt. Output is
deterministic: the same source and options give byte-identical shards and manifest.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from memlab.data import manifest as mf
from memlab.errors import DataError
from memlab.data.shards import CHUNK_TOKENS, SplitWriter, token_dtype
from memlab.data.sources import Source, open_source, split_of
from memlab.data.tokenizer import KINDS, BPETokenizer, ByteTokenizer

log = logging.getLogger("memlab")
SPLITS = ("train", "validation")
BATCH_CHARS = 1 << 20  # text tokenised per encode_batch call


@dataclass
class Prepared:
    directory: Path
    manifest: dict
    reused: bool    # True: the directory already held this request, intact; nothing was written
    seconds: float


def request_of(source: str, tokenizer: str, vocab_size: int, validation_fraction: float, max_docs: int | None,
               text_field: str, hf_split: str, tokenizer_sample_mb: float) -> dict:
    """The options that determine the output (recorded in the manifest; equal requests give equal data)."""
    if tokenizer not in KINDS:
        raise DataError(f"--tokenizer {tokenizer!r} is not accepted; choose one of {', '.join(KINDS)}")
    if not 0 < validation_fraction < 1:
        raise DataError(f"--validation-fraction must be in (0, 1), got {validation_fraction}")
    request = {"source": source, "tokenizer": tokenizer, "validation_fraction": validation_fraction,
               "max_docs": max_docs}
    if source != "stdlib":
        request["text_field"] = text_field
    if source.startswith("hf:"):
        request["hf_split"] = hf_split
    if tokenizer == "bpe":
        if not tokenizer_sample_mb > 0:
            raise DataError(f"--tokenizer-sample-mb must be > 0, got {tokenizer_sample_mb}")
        request.update(vocab_size=vocab_size, tokenizer_sample_mb=tokenizer_sample_mb)
    return request


def prepare(source: str, out: str | Path, *, tokenizer: str = "byte", vocab_size: int = 4096,
            validation_fraction: float = 0.05, max_docs: int | None = None, text_field: str = "text",
            hf_split: str = "train", tokenizer_sample_mb: float = 8.0, force: bool = False,
            progress: bool = True) -> Prepared:
    t0 = time.perf_counter()
    out = Path(out)
    request = request_of(source, tokenizer, vocab_size, validation_fraction, max_docs, text_field, hf_split,
                         tokenizer_sample_mb)
    existing = _existing(out, request, force)
    if existing is not None:
        return Prepared(out, existing, True, time.perf_counter() - t0)
    src = open_source(source, max_docs=max_docs, text_field=text_field, hf_split=hf_split)
    tok = (ByteTokenizer() if tokenizer == "byte"
           else BPETokenizer.train(_train_sample(src, validation_fraction, tokenizer_sample_mb), vocab_size))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        splits = _write_splits(src, tok, tmp, validation_fraction, progress)
        tok.save(tmp)
        files = mf.file_table(tmp)
        info = tok.describe()
        if info["file"]:
            info["sha256"] = files[info["file"]]["sha256"]
        manifest = {"format": mf.FORMAT, "request": request, "source": src.description, "tokenizer": info,
                    "dtype": token_dtype(tok.vocab_size).name, "chunk_tokens": CHUNK_TOKENS, "splits": splits,
                    "skipped": dict(sorted(src.skipped.items())), "files": files}
        mf.write(tmp, manifest)
        if out.exists():
            shutil.rmtree(out)  # only reached for a memlab data directory (checked by _existing)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Prepared(out, manifest, False, time.perf_counter() - t0)


def _existing(out: Path, request: dict, force: bool) -> dict | None:
    """The manifest of `out` if it already holds this request intact; None if `out` should be (re)built."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    if not (out / mf.MANIFEST).is_file():
        raise DataError(f"--out {out} exists and is not a memlab data directory (no {mf.MANIFEST}); "
                        "choose a new or empty directory")
    try:
        manifest = mf.load(out)
    except DataError as err:
        log.warning("rebuilding %s: %s", out, err)
        return None
    if manifest.get("request") != request:
        if not force:
            old = manifest.get("request", {})
            changed = sorted(k for k in set(old) | set(request) if old.get(k) != request.get(k))
            raise DataError(f"--out {out} holds data prepared with different options (differ in "
                            f"{', '.join(changed)}); pass --force to replace it, or choose another --out")
        return None
    try:
        mf.verify(out, manifest, "sha256")
    except DataError as err:
        log.warning("rebuilding %s: %s", out, err)
        return None
    return manifest


def _train_sample(src: Source, validation_fraction: float, megabytes: float) -> Iterator[str]:
    """Train-split documents up to `megabytes` of text: the BPE never sees validation text."""
    budget = int(megabytes * 1e6)
    for key, text in src.documents():
        if budget <= 0:
            return
        if split_of(key, validation_fraction) == "train":
            budget -= len(text)
            yield text


def _write_splits(src: Source, tok, directory: Path, validation_fraction: float, show: bool) -> dict:
    writers = {s: SplitWriter(directory / s, tok.vocab_size) for s in SPLITS}
    counts = {s: {"documents": 0, "bytes": 0} for s in SPLITS}
    pending: list[tuple[str, str]] = []

    def flush():
        for (split, text), ids in zip(pending, tok.encode_batch([t for _, t in pending])):
            writers[split].add_document(np.append(ids, np.int32(tok.eos_id)))
            counts[split]["documents"] += 1
            counts[split]["bytes"] += len(text.encode("utf-8"))
        pending.clear()

    columns = (TextColumn("[bold]prepare"), BarColumn(), MofNCompleteColumn(), TextColumn("documents"),
               TimeElapsedColumn())
    console = Console(stderr=True)
    with Progress(*columns, console=console, transient=True, disable=not (show and console.is_terminal)) as bar:
        task = bar.add_task("prepare", total=src.total)
        chars = 0
        for key, text in src.documents():
            pending.append((split_of(key, validation_fraction), text))
            chars += len(text)
            bar.advance(task)
            if chars >= BATCH_CHARS:
                flush()
                chars = 0
        flush()
    for s in SPLITS:
        counts[s]["tokens"] = writers[s].close()
    for s in SPLITS:
        if counts[s]["documents"] == 0:
            total = sum(c["documents"] for c in counts.values())
            raise DataError(f"the {s} split is empty ({total} documents, --validation-fraction "
                            f"{validation_fraction}); use more documents (--max-docs) or another fraction")
    return counts

