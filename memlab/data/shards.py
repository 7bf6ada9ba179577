"""Token shards on disk: one tensorstore zarr3 array of token ids per split, chunked and zstd-compressed, plus
an array of document start offsets.

A split is one flat token stream (each document followed by EOS), so a training window is one contiguous
slice: random access costs one chunk read, served from tensorstore's cache after the first time. The writer
streams: a corpus larger than memory is written chunk by chunk as it is tokenised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorstore as ts

from memlab.errors import DataError

CHUNK_TOKENS = 1 << 18   # 256 Ki tokens per chunk file (512 KiB as uint16 before compression)
CACHE_BYTES = 256 << 20  # decoded chunks kept in memory by readers
TOKENS, DOC_STARTS = "tokens", "doc_starts"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


def _spec(path: Path, dtype: np.dtype, chunk: int) -> dict:
    return {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)},
            "metadata": {"shape": [0], "data_type": np.dtype(dtype).name,
                         "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [chunk]}},
                         "chunk_key_encoding": {"name": "default"},
                         "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                                    {"name": "zstd", "configuration": {"level": 3, "checksum": False}}]},
            "create": True, "delete_existing": True}


class ArrayWriter:
    """Appends 1-D data to a new zarr3 array, writing whole chunks as soon as they are full."""

    def __init__(self, path: Path, dtype: np.dtype, chunk: int = CHUNK_TOKENS):
        self.array = ts.open(_spec(path, dtype, chunk)).result()
        self.dtype, self.chunk, self.length, self.pending, self.pending_len = np.dtype(dtype), chunk, 0, [], 0

    def append(self, values: np.ndarray) -> None:
        self.pending.append(np.asarray(values, dtype=self.dtype))
        self.pending_len += len(values)
        if self.pending_len >= self.chunk:
            self._flush(final=False)

    def close(self) -> int:
        """Write what is left; returns the array's length."""
        self._flush(final=True)
        return self.length

    def _flush(self, final: bool) -> None:
        data = np.concatenate(self.pending) if self.pending else np.zeros(0, self.dtype)
        n = len(data) if final else (len(data) // self.chunk) * self.chunk
        if n:
            end = self.length + n
            self.array = self.array.resize(exclusive_max=[end]).result()
            self.array[self.length:end].write(data[:n]).result()
            self.length = end
        rest = data[n:]
        self.pending, self.pending_len = ([rest] if len(rest) else []), len(rest)


class SplitWriter:
    """One split's token stream and document starts."""

    def __init__(self, directory: Path, vocab_size: int):
        directory.mkdir(parents=True, exist_ok=True)
        self.tokens = ArrayWriter(directory / TOKENS, token_dtype(vocab_size))
        self.starts: list[int] = []
        self.num_tokens = 0
        self.directory = directory

    def add_document(self, ids: np.ndarray) -> None:
        self.starts.append(self.num_tokens)
        self.tokens.append(ids)
        self.num_tokens += len(ids)

    def close(self) -> int:
        length = self.tokens.close()
        starts = ArrayWriter(self.directory / DOC_STARTS, np.int64, chunk=CHUNK_TOKENS)
        starts.append(np.asarray(self.starts, dtype=np.int64))
        starts.close()
        return length


def open_array(path: Path, context: ts.Context | None = None) -> ts.TensorStore:
    """Open a written array for reading; a damaged or missing array is a DataError naming the path."""
    try:
        return ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)},
                        "recheck_cached_data": "open"}, read=True, open=True,
                       context=context or ts.Context({"cache_pool": {"total_bytes_limit": CACHE_BYTES}})).result()
    except ValueError as err:
        raise DataError(f"cannot open token shard {path}: {err}; re-run memlab data prepare") from None


def read(array: ts.TensorStore, start: int, stop: int) -> np.ndarray:
    try:
        return array[start:stop].read().result()
    except ValueError as err:  # tensorstore reports undecodable chunks as ValueError
        raise DataError(f"token shard is damaged ({str(err).splitlines()[0]}); run memlab data verify on the "
                        "data directory and re-run memlab data prepare") from None
