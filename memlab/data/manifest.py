"""manifest.json of a prepared data directory: what was asked for, the tokeniser, per-split counts, and the
size and SHA-256 of every file, so a truncated or corrupted shard is caught before training reads it.

Verification has two depths: "size" (stat only, cheap enough for every config check) and "sha256" (reads
every byte; done once per process for each set of files, then cached while their size and mtime stay put).
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from memlab.errors import DataError

MANIFEST = "manifest.json"
FORMAT = "memlab-text-shards/1"
VERIFY_MODES = ("sha256", "size")
_verified: set[tuple] = set()
_lock = threading.Lock()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def file_table(directory: Path) -> dict[str, dict]:
    """{relative path: {"bytes", "sha256"}} of every file under `directory` except the manifest itself."""
    return {p.relative_to(directory).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST}


def write(directory: Path, manifest: dict) -> None:
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def load(directory: str | Path) -> dict:
    """The manifest of a prepared directory, or a DataError saying how to make one."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        what = "does not exist" if not directory.exists() else f"has no {MANIFEST}"
        raise DataError(f"data directory {directory} {what}; create it with "
                        f"`memlab data prepare --source stdlib --out {directory}`")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); re-run memlab data prepare") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DataError(f"{path} has format {found!r}; this memlab reads {FORMAT!r}: re-run memlab data prepare")
    return manifest


def verify(directory: str | Path, manifest: dict, mode: str = "sha256", prefix: str = "") -> None:
    """Check the files the manifest lists (those under `prefix` only, if given); raise DataError on the first
    missing, resized or altered one, naming it and the fix."""
    if mode not in VERIFY_MODES:
        raise DataError(f"data.verify={mode!r} is not accepted; choose one of {', '.join(VERIFY_MODES)}")
    directory = Path(directory).resolve()
    fix = f"re-run `memlab data prepare` for {directory} (it rebuilds damaged data)"
    listed = {k: v for k, v in manifest["files"].items() if k.startswith(prefix)}
    stats = {}
    for rel, want in sorted(listed.items()):
        path = directory / rel
        if not path.is_file():
            raise DataError(f"shard file {path} is missing (listed in {MANIFEST}); {fix}")
        st = path.stat()
        if st.st_size != want["bytes"]:
            kind = "truncated" if st.st_size < want["bytes"] else "larger than recorded"
            raise DataError(f"shard file {path} is {kind}: {st.st_size} bytes on disk, {want['bytes']} in "
                            f"{MANIFEST}; {fix}")
        stats[rel] = (st.st_size, st.st_mtime_ns)
    if mode == "size":
        return
    key = (str(directory), json.dumps(listed, sort_keys=True), tuple(sorted(stats.items())))
    with _lock:
        if key in _verified:
            return
    for rel, want in sorted(listed.items()):
        if sha256_file(directory / rel) != want["sha256"]:
            raise DataError(f"shard file {directory / rel} is corrupted: its SHA-256 differs from {MANIFEST}; {fix}")
    with _lock:
        _verified.add(key)
