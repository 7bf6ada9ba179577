"""Text: fixed-length windows of a prepared token stream (`memlab data prepare`) as next-token examples.

Train index i is window perm_e(i mod n) of epoch e = i div n, where n is the number of windows and perm_e a
seeded permutation that differs per epoch (grain's index_shuffle: O(1) memory, so corpora of any size). The
stream is endless, each window is seen once per epoch, and an index always gives the same example, so the
grain iterator position alone resumes it mid-epoch and host shards (every H-th index) are disjoint. The eval
split reads the validation shards in its own fixed order, spread over the whole validation text (an
`eval.num_examples` larger than the validation windows wraps around into a second, differently ordered pass).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from grain.experimental import index_shuffle

from memlab.data import manifest as mf
from memlab.data.packing import PACKING, pack
from memlab.data.shards import DOC_STARTS, TOKENS, open_array, read
from memlab.registry import TASKS

SPLIT_DIRS = {"train": "train", "eval": "validation"}
STREAM = {"train": 0, "eval": 1}


@lru_cache(maxsize=64)
def _epoch_seed(seed: int, stream: int, epoch: int) -> int:
    """32-bit shuffle seed of one epoch of one split: distinct per (seed, split, epoch)."""
    return int(np.random.SeedSequence((seed, stream, epoch)).generate_state(1)[0])


@TASKS.register("text")
class Text:
    def __init__(self, cfg, split: str, seed: int):
        self.check(cfg)
        directory = Path(cfg.path)
        self.manifest = mf.load(directory)
        name = SPLIT_DIRS[split]
        mf.verify(directory, self.manifest, cfg.verify, prefix=f"{name}/")
        self.tokens = open_array(directory / name / TOKENS)
        self.doc_starts = read(open_array(directory / name / DOC_STARTS), 0, None)
        self.seq_len, self.packing, self.seed, self.stream = cfg.seq_len, cfg.packing, seed, STREAM[split]
        self.num_windows = (self.tokens.shape[0] - 1) // self.seq_len
        if self.num_windows >= 2**32:
            raise ValueError(f"{directory}/{name} has {self.num_windows} windows of data.seq_len={self.seq_len}; "
                             "the shuffle handles at most 2^32 - 1: use a longer seq_len")

    @staticmethod
    def defaults() -> dict:
        """The task's `data.*` knobs with their defaults."""
        return {"path": "",              # directory written by `memlab data prepare`
                "seq_len": 256,
                "packing": "segments",   # segments (documents separated by segment_ids) | concat
                "vocab_size": 0,         # 0: the tokeniser's; larger pads the embedding table
                "verify": "sha256"}      # checksum every shard on open | size (stat only; huge corpora)

    @staticmethod
    def check(cfg) -> None:
        """Checks the knobs against the prepared data (manifest and shard sizes; cheap). Also resolves
        `data.vocab_size = 0` to the tokeniser's vocabulary size, so the written config records the real one."""
        if not cfg.path:
            raise ValueError("data.path is empty: set it to a directory made by `memlab data prepare`, e.g. "
                             "memlab data prepare --source stdlib --out data/stdlib; --set data.path=data/stdlib")
        if cfg.packing not in PACKING:
            raise ValueError(f"data.packing={cfg.packing!r} is not accepted; choose one of {', '.join(PACKING)}")
        if cfg.verify not in mf.VERIFY_MODES:
            raise ValueError(f"data.verify={cfg.verify!r} is not accepted; choose one of {', '.join(mf.VERIFY_MODES)}")
        if not (isinstance(cfg.seq_len, int) and cfg.seq_len >= 1):
            raise ValueError(f"data.seq_len={cfg.seq_len!r} must be a positive integer")
        manifest = mf.load(cfg.path)
        mf.verify(cfg.path, manifest, "size")
        vocab = manifest["tokenizer"]["vocab_size"]
        if cfg.vocab_size == 0:
            cfg.vocab_size = vocab
        elif cfg.vocab_size < vocab:
            raise ValueError(f"data.vocab_size={cfg.vocab_size} is smaller than the {vocab} ids of the "
                             f"{manifest['tokenizer']['kind']} tokeniser in {cfg.path}; use 0 (the tokeniser's) "
                             f"or a value >= {vocab}")
        for split, counts in manifest["splits"].items():
            if counts["tokens"] < cfg.seq_len + 1:
                raise ValueError(f"the {split} split of {cfg.path} has {counts['tokens']} tokens, fewer than one "
                                 f"window of data.seq_len={cfg.seq_len} (+1); prepare more text or shorten seq_len")

    @staticmethod
    def example_shapes(cfg) -> dict[str, tuple[int, ...]]:
        keys = ("inputs", "targets")
        if cfg.packing == "segments":
            keys += ("segment_ids", "positions", "token_mask")
        return {k: (cfg.seq_len,) for k in keys}

    def __len__(self) -> int:
        return np.iinfo(np.int32).max

    def window(self, index: int) -> int:
        """Which window (of `num_windows`) stream index `index` reads."""
        epoch, i = divmod(int(index), self.num_windows)
        if self.num_windows == 1:
            return 0
        return int(index_shuffle(i, max_index=self.num_windows - 1, seed=_epoch_seed(self.seed, self.stream, epoch), rounds=4))

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        start = self.window(index) * self.seq_len
        return pack(read(self.tokens, start, start + self.seq_len + 1), start, self.doc_starts, self.packing)

    def derived_eval_metrics(self, metrics: dict) -> dict:
        """`eval/bits_per_byte` of the validation text: next-token nats per scored token times scored tokens
        per byte of UTF-8, in bits. In segments mode a document's first token is never a target (nothing of it
        precedes it), so scored tokens are tokens minus documents. Comparable across tokenisers."""
        if "eval/loss/next_token" not in metrics:
            return {}
        val = self.manifest["splits"]["validation"]
        scored = val["tokens"] - (val["documents"] if self.packing == "segments" else 0)
        return {"eval/bits_per_byte": metrics["eval/loss/next_token"] / math.log(2) * scored / val["bytes"]}
