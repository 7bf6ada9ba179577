"""Where documents come from: the running Python's standard library, local files, or a Hugging Face dataset.

A source yields `(key, text)` documents in a fixed order. The key (a relative path, `path:line` for JSON lines,
`name/split/index` for a dataset row) decides the document's split by hash (`split_of`), so a document keeps
its split however many others are added or removed. Spec syntax:

    stdlib                       the .py files of this Python's standard library (real text wherever Python is)
    PATH | DIR | 'GLOB'          local files; .jsonl/.json lines give one document per line (`text_field`)
    hf:NAME[:CONFIG]             a Hugging Face dataset, streamed (e.g. hf:roneneldan/TinyStories)
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import sysconfig
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from memlab.errors import DataError

JSON_LINES = (".jsonl", ".json")


def split_of(key: str, validation_fraction: float) -> str:
    """'validation' for a stable `validation_fraction` share of keys (by SHA-256 of the key), else 'train'."""
    h = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2.0**64
    return "validation" if h < validation_fraction else "train"


@dataclass
class Source:
    """A re-iterable corpus: `documents()` starts from the beginning on every call."""

    description: str
    _documents: Callable[["Source"], Iterator[tuple[str, str]]]
    total: int | None = None  # documents, when known up front (for progress)
    skipped: Counter = field(default_factory=Counter)  # reason -> count, filled while iterating

    def documents(self) -> Iterator[tuple[str, str]]:
        self.skipped.clear()
        return self._documents(self)


def open_source(spec: str, *, max_docs: int | None = None, text_field: str = "text",
                hf_split: str = "train") -> Source:
    """The source a spec names (see the module docstring); `max_docs` keeps only the first N documents."""
    if max_docs is not None and max_docs < 1:
        raise DataError(f"--max-docs must be a positive number of documents, got {max_docs}")
    if spec == "stdlib":
        return _stdlib(max_docs)
    if spec.startswith("hf:"):
        return _huggingface(spec[3:], hf_split, text_field, max_docs)
    return _local(spec, text_field, max_docs)


def _decode(data: bytes, source: Source) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        source.skipped["not UTF-8"] += 1
        return None
    if not text:
        source.skipped["empty"] += 1
        return None
    return text


def _stdlib(max_docs: int | None) -> Source:
    """Every .py file of the stdlib (no site-packages), ordered by hash of its path: `max_docs` then gives a
    deterministic sample spread over all packages instead of the alphabetically first ones."""
    root = Path(sysconfig.get_paths()["stdlib"]).resolve()
    excluded = {"site-packages", "dist-packages", "__pycache__"}
    rel = [p.relative_to(root).as_posix() for p in root.rglob("*.py")
           if p.is_file() and not excluded & set(p.relative_to(root).parts)]
    rel.sort(key=lambda r: (hashlib.sha256(r.encode()).hexdigest(), r))
    rel = rel[:max_docs]
    if not rel:
        raise DataError(f"no .py files found in the standard library at {root}")

    def documents(source: Source):
        for r in rel:
            text = _decode((root / r).read_bytes(), source)
            if text is not None:
                yield f"stdlib/{r}", text

    return Source(f"stdlib of Python {platform.python_version()} ({len(rel)} files)", documents, total=len(rel))


def _local_files(spec: str) -> tuple[Path, list[Path]]:
    path = Path(spec).expanduser()
    if path.is_file():
        return path.parent, [path]
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file()
                 and not any(part.startswith(".") for part in p.relative_to(path).parts)]
        return path, sorted(files)
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True) if Path(p).is_file())
        base = Path(os.path.commonpath([str(p.parent) for p in files])) if files else Path(".")
        return base, files
    raise DataError(f"--source {spec!r} is not a file, directory or glob that exists; accepted: stdlib, a path, "
                    "a directory, a quoted glob such as 'corpus/**/*.txt', or hf:NAME[:CONFIG]")


def _local(spec: str, text_field: str, max_docs: int | None) -> Source:
    """Local text files, one document each, in sorted path order; JSON-lines files give one per line."""
    base, files = _local_files(spec)
    if not files:
        raise DataError(f"--source {spec!r} matches no files")

    def documents(source: Source):
        count = 0
        for path in files:
            rel = path.relative_to(base).as_posix()
            if path.suffix in JSON_LINES:
                docs = _json_lines(path, rel, text_field, source)
            else:
                text = _decode(path.read_bytes(), source)
                docs = [] if text is None else [(rel, text)]
            for doc in docs:
                if max_docs is not None and count >= max_docs:
                    return
                count += 1
                yield doc

    return Source(f"{spec} ({len(files)} files)", documents, total=max_docs if max_docs else None)


def _json_lines(path: Path, rel: str, text_field: str, source: Source) -> Iterator[tuple[str, str]]:
    with path.open("rb") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise DataError(f"{path}:{line_no} is not valid UTF-8 JSON ({err}); .jsonl/.json sources hold "
                                "one JSON object per line") from None
            if not isinstance(row, dict) or text_field not in row:
                keys = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise DataError(f"{path}:{line_no} has no field {text_field!r} (has {keys}); set --text-field")
            text = row[text_field]
            if not isinstance(text, str) or not text:
                source.skipped["empty"] += 1
                continue
            yield f"{rel}:{line_no}", text


def _huggingface(name: str, split: str, text_field: str, max_docs: int | None) -> Source:
    """A Hugging Face dataset read with `streaming=True`: nothing is downloaded up front, rows arrive in the
    dataset's own order, so the first `max_docs` rows of a huge corpus (FineWeb-Edu) are cheap to take."""
    name, _, config = name.partition(":")
    if not name:
        raise DataError("--source hf: needs a dataset name, e.g. hf:roneneldan/TinyStories or "
                        "hf:HuggingFaceFW/fineweb-edu:sample-10BT")

    def documents(source: Source):
        try:
            import datasets
        except ImportError:
            raise DataError("hf: sources need the `datasets` package: pip install datasets") from None
        try:
            stream = datasets.load_dataset(name, config or None, split=split, streaming=True)
        except Exception as err:  # hub, network and builder errors come in many types
            first_line = str(err).splitlines()[0] if str(err) else ""
            raise DataError(f"cannot stream Hugging Face dataset {name!r} (config {config or None!r}, split "
                            f"{split!r}): {type(err).__name__}: {first_line}") from None
        for index, row in enumerate(stream):
            if max_docs is not None and index >= max_docs:
                return
            if text_field not in row:
                raise DataError(f"Hugging Face dataset {name!r} rows have no field {text_field!r} "
                                f"(fields: {sorted(row)}); set --text-field")
            text = row[text_field]
            if not isinstance(text, str) or not text:
                source.skipped["empty"] += 1
                continue
            yield f"{name}/{config}/{split}/{index}", text

    label = f"hf:{name}" + (f":{config}" if config else "") + f" split {split}"
    return Source(label, documents, total=max_docs)
