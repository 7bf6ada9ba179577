"""Write-ahead journal of a saved memory: every write, forget and growth is appended and fsync'd before the call
that made it returns, so a process killed at any point loses no acknowledged change.

File format (append-only, little-endian), one record after another:

    b"MLJ1" | payload length: uint64 | SHA-256 of the payload: 32 bytes | payload
    payload = header length: uint32 | header JSON | keys as float32 bytes | values as float32 bytes

The header holds op ("write", "forget", "grow"), alpha, beta, the [rows, width] of keys and values, and the new
d_key of a growth. Reading stops at the first damaged record. If that record reaches the end of the file (cut
short, or a checksum or marker that fails there, as a crash mid-append leaves it) it is a torn tail: dropped
with a warning and cut off, since its call never returned. Damage with intact records after it is corruption
and raises CorruptStoreError.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memlab.errors import CorruptStoreError

MAGIC = b"MLJ1"
_HEAD = struct.Struct("<4sQ32s")


@dataclass(frozen=True)
class Record:
    op: str
    keys: np.ndarray | None = None  # [N, w] float32
    values: np.ndarray | None = None  # [N, d_value] float32
    alpha: float = 1.0
    beta: float = 1.0
    d_key: int | None = None  # growth: the new key size


def encode(record: Record) -> bytes:
    arrays = [a for a in (record.keys, record.values) if a is not None]
    header = json.dumps(
        {
            "op": record.op,
            "alpha": record.alpha,
            "beta": record.beta,
            "d_key": record.d_key,
            "keys": None if record.keys is None else list(record.keys.shape),
            "values": None if record.values is None else list(record.values.shape),
        }
    ).encode()
    payload = struct.pack("<I", len(header)) + header + b"".join(a.astype("<f4").tobytes() for a in arrays)
    return _HEAD.pack(MAGIC, len(payload), hashlib.sha256(payload).digest()) + payload


def decode(payload: bytes) -> Record:
    (size,) = struct.unpack_from("<I", payload)
    header = json.loads(payload[4 : 4 + size])
    offset, arrays = 4 + size, {}
    for name in ("keys", "values"):
        if header[name] is not None:
            rows, width = header[name]
            count = rows * width
            arrays[name] = np.frombuffer(payload, "<f4", count, offset).reshape(rows, width).astype(np.float32)
            offset += 4 * count
    return Record(
        header["op"], arrays.get("keys"), arrays.get("values"), header["alpha"], header["beta"], header["d_key"]
    )


def read(path: Path) -> list[Record]:
    """Every intact record of the journal at `path` ([] if absent); a torn tail is warned about and cut off."""
    if not path.exists():
        return []
    data = path.read_bytes()
    records, offset = [], 0
    while offset < len(data):
        problem, end = _check(data, offset)
        if problem is None:
            records.append(decode(data[offset + _HEAD.size : end]))
            offset = end
            continue
        if end < len(data):
            raise CorruptStoreError(
                f"journal {path} is corrupted: record {len(records)} at byte {offset} "
                f"{problem}, and {len(data) - end} bytes follow it"
            )
        warnings.warn(
            f"journal {path}: dropped a torn last record at byte {offset} ({problem}); it was never acknowledged",
            RuntimeWarning,
            stacklevel=2,
        )
        with path.open("r+b") as f:
            f.truncate(offset)
            os.fsync(f.fileno())
        break
    return records


def _check(data: bytes, offset: int) -> tuple[str | None, int]:
    """(None, end of record) for an intact record, else (what is wrong, where anything after it would start)."""
    if len(data) - offset < _HEAD.size:
        return "is cut short inside its header", len(data)
    magic, size, digest = _HEAD.unpack_from(data, offset)
    if magic != MAGIC:
        rest_is_blank = not data[offset:].strip(b"\0")
        return "does not start with the record marker", len(data) if rest_is_blank else offset + _HEAD.size
    end = offset + _HEAD.size + size
    if end > len(data):
        return f"is cut short ({len(data) - offset - _HEAD.size} of {size} payload bytes)", len(data)
    if hashlib.sha256(data[offset + _HEAD.size : end]).digest() != digest:
        return "fails its SHA-256 check", end
    return None, end


class Journal:
    """Appends records to one journal file, durably (flush + fsync per record)."""

    def __init__(self, path: Path):
        self.path = path
        fresh = not path.exists()
        self._file = path.open("ab")
        if fresh:
            fsync_dir(path.parent)

    def append(self, record: Record) -> None:
        self._file.write(encode(record))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
