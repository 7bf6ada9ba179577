"""Snapshots of a memory directory: arrays in zarr (tensorstore) plus manifest.json, which records shape, dtype,
rule, counts and the SHA-256 of every array's contents and every file, and a SHA-256 of itself. Reading
verifies all of them, so a flipped byte anywhere is a CorruptStoreError, never a silent load.

Layout: DIR/manifest.json, DIR/snapshot-G/<name>.zarr, DIR/journal-G.wal (changes since snapshot G). Saving
writes snapshot G+1 in full, then commits it by atomically replacing manifest.json; only then are older
snapshots and journals removed. A crash at any point leaves either the old or the new generation readable,
each with its own journal, so nothing is replayed twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import tensorstore as ts

from memlab.data.manifest import file_table, sha256_file
from memlab.errors import CorruptStoreError, StoreError

from .journal import fsync_dir

MANIFEST = "manifest.json"
FORMAT = "memlab-matrix-memory/1"
_GENERATION = re.compile(r"^(?:snapshot|journal)-(\d+)(?:\.wal)?$")


def journal_path(directory: Path, generation: int) -> Path:
    return directory / f"journal-{generation}.wal"


def _generations(directory: Path) -> list[tuple[int, Path]]:
    found = [(_GENERATION.match(p.name), p) for p in directory.iterdir()] if directory.is_dir() else []
    return [(int(m.group(1)), p) for m, p in found if m]


def _self_digest(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _array_digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, "<f4").tobytes()).hexdigest()


def _zarr(path: Path, array: np.ndarray | None = None):
    spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(path)}}
    if array is None:
        return ts.open(spec, open=True).result()
    spec["metadata"] = {"dtype": "<f4", "shape": list(array.shape), "chunks": list(array.shape), "compressor": None}
    store = ts.open(spec, create=True, delete_existing=True).result()
    store.write(array).result()
    return store


def write(directory: Path, arrays: dict[str, np.ndarray], meta: dict) -> int:
    """Write a new snapshot generation of `arrays` (float32) with `meta` in the manifest; return its number."""
    directory.mkdir(parents=True, exist_ok=True)
    generation = 1 + max((g for g, _ in _generations(directory)), default=0)
    snap = directory / f"snapshot-{generation}"
    for name, array in arrays.items():
        _zarr(snap / f"{name}.zarr", np.asarray(array, np.float32))
    manifest = {
        "format": FORMAT,
        "generation": generation,
        **meta,
        "dtype": "float32",
        "arrays": {
            name: {"shape": list(np.shape(a)), "sha256": _array_digest(np.asarray(a, np.float32))}
            for name, a in arrays.items()
        },
        "files": file_table(snap),
    }
    manifest["manifest_sha256"] = _self_digest(manifest)
    tmp = directory / f"{MANIFEST}.tmp"
    with tmp.open("w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(directory / MANIFEST)
    fsync_dir(directory)
    for old, path in _generations(directory):
        if old == generation:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return generation


def read(directory: Path) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, manifest) of the committed snapshot, after checking every recorded digest."""
    path = directory / MANIFEST
    if not path.is_file():
        raise StoreError(f"no saved memory at {directory}: {MANIFEST} is missing (save one with MatrixMemory.save)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptStoreError(f"{path} is corrupted: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorruptStoreError(f"{path} is not a {FORMAT} manifest")
    if manifest.get("manifest_sha256") != _self_digest(manifest):
        raise CorruptStoreError(f"{path} is corrupted: its contents do not match its own SHA-256")
    snap = directory / f"snapshot-{manifest['generation']}"
    for rel, want in manifest["files"].items():
        file = snap / rel
        if not file.is_file():
            raise CorruptStoreError(f"snapshot file {file} is missing (listed in {path})")
        if file.stat().st_size != want["bytes"] or sha256_file(file) != want["sha256"]:
            raise CorruptStoreError(f"snapshot file {file} is corrupted: its size or SHA-256 differs from {path}")
    arrays = {}
    for name, want in manifest["arrays"].items():
        array = np.asarray(_zarr(snap / f"{name}.zarr").read().result(), np.float32)
        if list(array.shape) != want["shape"] or _array_digest(array) != want["sha256"]:
            raise CorruptStoreError(
                f"array {name!r} in {snap} is corrupted: shape {list(array.shape)} or SHA-256 differs from {path}"
            )
        arrays[name] = array
    return arrays, manifest
