"""Verified snapshots: named arrays in zarr (tensorstore) plus manifest.json, which records each array's file,
shape, dtype and SHA-256, the size and SHA-256 of every file, and a SHA-256 of itself. Reading verifies all of
them, so a flipped byte anywhere is a CorruptStoreError, never a silent load. Two formats share it: the
associative store's memory directories (FORMAT) and saved parameter blocks (memlab.train.param_blocks).

Layout: DIR/manifest.json, DIR/snapshot-G/<name>.zarr, DIR/journal-G.wal (changes since snapshot G). Saving
writes snapshot G+1 in full, then commits it by atomically replacing manifest.json; only then are older
snapshots and journals removed. A crash at any point leaves either the old or the new generation readable,
each with its own journal, so nothing is replayed twice.

Names may be '/'-separated paths (parameter paths); each is stored as one flat file name ('/' -> '.'), so a
name's components may not contain '.'. The manifest is never trusted as a file system path: a recorded file
name or relative path that could leave the snapshot directory is an error.
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
_NAME = re.compile(r"^[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*$")
_FILE = re.compile(r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.zarr$")


def journal_path(directory: Path, generation: int) -> Path:
    return directory / f"journal-{generation}.wal"


def _generations(directory: Path) -> list[tuple[int, Path]]:
    found = [(_GENERATION.match(p.name), p) for p in directory.iterdir()] if directory.is_dir() else []
    return [(int(m.group(1)), p) for m, p in found if m]


def _self_digest(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _array_digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _file_name(name: str) -> str:
    """The flat file name an array is stored under: `blocks/0/mlp/up/kernel` -> `blocks.0.mlp.up.kernel.zarr`."""
    if not _NAME.match(name):
        raise StoreError(
            f"array name {name!r} cannot be saved: expected '/'-separated components of letters, digits, '_' or '-'"
        )
    return name.replace("/", ".") + ".zarr"


def _inside(snap: Path, rel: str, manifest: Path) -> Path:
    """`snap / rel` for a relative path read from a manifest, which may not leave `snap`."""
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts) or "\\" in rel:
        raise CorruptStoreError(f"{manifest} is corrupted: file path {rel!r} would leave the snapshot directory")
    return snap.joinpath(*parts)


def _zarr(path: Path, array: np.ndarray | None = None):
    spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(path)}}
    if array is None:
        return ts.open(spec, open=True).result()
    spec["dtype"] = array.dtype.name  # tensorstore's names; bfloat16 is stored as such (ml_dtypes' bits)
    spec["metadata"] = {"shape": list(array.shape), "chunks": list(array.shape), "compressor": None}
    store = ts.open(spec, create=True, delete_existing=True).result()
    store.write(array).result()
    return store


def write(directory: Path, arrays: dict[str, np.ndarray], meta: dict, *, format: str = FORMAT) -> int:
    """Write a new snapshot generation of `arrays` (each kept in its own dtype) with `meta` in a `format`
    manifest; return its number."""
    arrays = {name: np.asarray(array) for name, array in arrays.items()}
    files = {name: _file_name(name) for name in arrays}
    directory.mkdir(parents=True, exist_ok=True)
    generation = 1 + max((g for g, _ in _generations(directory)), default=0)
    snap = directory / f"snapshot-{generation}"
    for name, array in arrays.items():
        _zarr(snap / files[name], array)
    manifest = {
        "format": format,
        "generation": generation,
        **meta,
        "arrays": {
            name: {"file": files[name], "shape": list(a.shape), "dtype": a.dtype.name, "sha256": _array_digest(a)}
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


def read(directory: Path, *, format: str = FORMAT) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, manifest) of the committed `format` snapshot, after checking every recorded digest."""
    path = directory / MANIFEST
    if not path.is_file():
        raise StoreError(f"nothing saved at {directory}: {MANIFEST} is missing (expected a {format} snapshot)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptStoreError(f"{path} is corrupted: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != format:
        raise CorruptStoreError(f"{path} is not a {format} manifest")
    if manifest.get("manifest_sha256") != _self_digest(manifest):
        raise CorruptStoreError(f"{path} is corrupted: its contents do not match its own SHA-256")
    if type(manifest.get("generation")) is not int:
        raise CorruptStoreError(f"{path} is corrupted: generation {manifest.get('generation')!r} is not an integer")
    snap = directory / f"snapshot-{manifest['generation']}"
    for rel, want in manifest["files"].items():
        file = _inside(snap, rel, path)
        if not file.is_file():
            raise CorruptStoreError(f"snapshot file {file} is missing (listed in {path})")
        if file.stat().st_size != want["bytes"] or sha256_file(file) != want["sha256"]:
            raise CorruptStoreError(f"snapshot file {file} is corrupted: its size or SHA-256 differs from {path}")
    arrays = {}
    for name, want in manifest["arrays"].items():
        # manifests written before arrays kept their dtype name no file and hold float32 only
        file, dtype = want.get("file", f"{name}.zarr"), want.get("dtype", "float32")
        if not _FILE.match(file):
            raise CorruptStoreError(f"{path} is corrupted: array file {file!r} is not a plain file name")
        try:
            array = _zarr(snap / file).read().result()
        except ValueError as err:  # tensorstore: missing or unreadable zarr metadata or chunk
            raise CorruptStoreError(f"array {name!r} in {snap} cannot be read: {str(err)[:200]}") from None
        if list(array.shape) != want["shape"] or array.dtype.name != dtype or _array_digest(array) != want["sha256"]:
            raise CorruptStoreError(
                f"array {name!r} in {snap} is corrupted: shape {list(array.shape)}, dtype {array.dtype.name} "
                f"or SHA-256 differs from {path}"
            )
        arrays[name] = array
    return arrays, manifest
