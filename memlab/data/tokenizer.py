"""Tokenisers for prepared text: byte-level (needs no file) and a byte-level BPE trained on the corpus.

Both are exactly reversible (`decode(encode(s)) == s` for any str) and reserve one end-of-document id that
prepare appends to every document, so a model learns where documents end. A trained tokeniser is saved beside
the shards as `tokenizer.json`; the manifest records its kind, vocabulary size, EOS id, file and SHA-256.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from memlab.errors import DataError

EOS = "<|endoftext|>"
KINDS = ("byte", "bpe")
BPE_FILE = "tokenizer.json"


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, EOS = 256: no training, no file, bits per byte read straight off the loss."""

    kind, vocab_size, eos_id, file = "byte", 257, 256, None

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.int32) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        ids = np.asarray(list(ids), dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() > self.eos_id):
            raise ValueError(f"byte tokeniser ids are 0..{self.eos_id}; got values in [{ids.min()}, {ids.max()}]")
        parts = np.split(ids, np.flatnonzero(ids == self.eos_id))  # every part after the first starts with EOS
        return EOS.join(bytes(p[p != self.eos_id].astype(np.uint8)).decode("utf-8", errors="replace") for p in parts)

    def save(self, directory: Path) -> None:
        """Nothing to save: the byte tokeniser is fully described by its kind."""

    def describe(self) -> dict:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "eos_id": self.eos_id, "file": None}


class BPETokenizer:
    """GPT-2-style byte-level BPE (Hugging Face `tokenizers`): any text encodes, with fewer tokens than bytes."""

    kind, file = "bpe", BPE_FILE

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.token_to_id(EOS)
        if self.eos_id is None:
            raise DataError(f"the BPE tokeniser has no {EOS} token; it was not made by memlab data prepare")
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "BPETokenizer":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < 257 + 1:
            raise DataError(f"--vocab-size {vocab_size} is too small for byte-level BPE: need >= 258 "
                            "(256 byte symbols, EOS, and at least one merge)")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: Path) -> "BPETokenizer":
        from tokenizers import Tokenizer

        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as err:  # tokenizers raises a bare Exception on a bad file
            raise DataError(f"cannot load the BPE tokeniser {path}: {err}; re-run memlab data prepare") from None

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.int32) for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def save(self, directory: Path) -> None:
        self.tokenizer.save(str(directory / BPE_FILE))

    def describe(self) -> dict:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "eos_id": self.eos_id, "file": BPE_FILE}


def load_tokenizer(info: dict, directory: Path):
    """The tokeniser a manifest describes (`info` = its "tokenizer" entry), loaded from `directory`."""
    kind = info.get("kind")
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        return BPETokenizer.load(Path(directory) / info["file"])
    raise DataError(f"{directory}: manifest names tokenizer kind {kind!r}; accepted kinds: {', '.join(KINDS)}")
