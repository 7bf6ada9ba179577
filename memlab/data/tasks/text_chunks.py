"""Text in chunks: an example is `data.num_chunks` (n) consecutive chunks of `data.chunk_len` (L) tokens of
prepared text (byte or BPE tokeniser), for the memory models (memlab.models.memory_model) that decode each chunk from its own tokens
and one memory vector per earlier chunk.

Fields, all [n * L]: `inputs` (the n chunks back to back), `targets` (the next token of the stream) and
`token_mask`, 0 at the last position of every chunk: the token after it begins the next chunk, which a chunk's
decoder never sees, so the first token of a chunk is never scored.

The vocabulary is the tokeniser's V ids plus two reserved ones the copy pass of memlab.passes writes, V (DELIMITER,
at the boundary) and V + 1 (BLANK, for the tokens the decoder must recall from memory): special tokens never reuse
a real token's id (pitfall A.4 of the research notes). Only the task knows V, so every example carries the two ids
(`reserved_ids`) to the pass. Windows are read by the text task (same shuffling, resumption and host shards),
documents concatenated with EOS between them.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np

from memlab.data.tasks.text import Text
from memlab.registry import TASKS

RESERVED = 2  # DELIMITER and BLANK, after the tokeniser's ids


def reserved_ids(tokenizer_vocab: int) -> tuple[int, int]:
    """(DELIMITER, BLANK) of a corpus whose tokeniser has `tokenizer_vocab` ids: the two ids after them."""
    return tokenizer_vocab, tokenizer_vocab + 1


def _text_config(cfg) -> ml_collections.ConfigDict:
    """The text task's knobs reading `data.path` in windows of the whole example, concatenated."""
    sub = ml_collections.ConfigDict(Text.defaults())
    sub.update(path=cfg.path, seq_len=cfg.num_chunks * cfg.chunk_len, packing="concat", verify=cfg.verify)
    return sub


@TASKS.register("text_chunks")
class TextChunks:
    def __init__(self, cfg, split: str, seed: int):
        self.check(cfg)
        self.cfg = cfg
        self.text = Text(_text_config(cfg), split, seed)
        self.reserved = np.array(reserved_ids(self.text.manifest["tokenizer"]["vocab_size"]), np.int32)

    @staticmethod
    def defaults() -> dict:
        """The task's `data.*` knobs with their defaults."""
        return {
            "path": "",  # directory written by `memlab data prepare` (byte or BPE tokeniser)
            "num_chunks": 4,  # n: chunks per example; the copy pass needs an even n (its halves are whole chunks)
            "chunk_len": 64,  # L: tokens per chunk
            "vocab_size": 0,  # 0: the tokeniser's ids + DELIMITER and BLANK; larger pads the embedding table
            "verify": "sha256",  # checksum every shard on open | size (stat only)
        }

    @staticmethod
    def check(cfg) -> None:
        """ValueError naming the key for non-positive sizes, a corpus the text task rejects, or a vocabulary
        without room for the reserved ids. Resolves `data.vocab_size = 0` to the tokeniser's ids + 2."""
        for key in ("num_chunks", "chunk_len"):
            if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 1:
                raise ValueError(f"data.{key}={cfg[key]!r} must be a positive integer")
        if cfg.chunk_len < 2:
            raise ValueError(f"data.chunk_len={cfg.chunk_len} must be >= 2 (a chunk's first token is never scored)")
        sub = _text_config(cfg)
        try:
            Text.check(sub)
        except ValueError as err:
            raise type(err)(f"data.path={cfg.path!r} (read in windows of num_chunks * chunk_len tokens): {err}") from None
        need = sub.vocab_size + RESERVED
        if cfg.vocab_size == 0:
            cfg.vocab_size = need
        elif cfg.vocab_size < need:
            raise ValueError(
                f"data.vocab_size={cfg.vocab_size} cannot hold the {sub.vocab_size} ids of the tokeniser in "
                f"{cfg.path}, DELIMITER and BLANK: use 0 (the tokeniser's + 2) or a value >= {need}"
            )

    @staticmethod
    def example_shapes(cfg) -> dict[str, tuple[int, ...]]:
        t = cfg.num_chunks * cfg.chunk_len
        return {**{k: (t,) for k in ("inputs", "targets", "token_mask")}, "reserved_ids": (RESERVED,)}

    def __len__(self) -> int:
        return len(self.text)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        window = self.text[index]
        token_mask = np.ones((self.cfg.num_chunks, self.cfg.chunk_len), np.float32)
        token_mask[:, -1] = 0.0
        return {
            "inputs": window["inputs"],
            "targets": window["targets"],
            "token_mask": token_mask.reshape(-1),
            "reserved_ids": self.reserved.copy(),
        }

    def eval_metrics(self, outputs: dict, batch: dict) -> dict:
        """`later_chunks_loss`: next-token cross-entropy over chunks 1..n-1, the ones an earlier chunk's memory can
        inform (chunk 0 has none to read), so memory and no-memory decoders compare where memory matters. None for
        an autoencoder, whose outputs regenerate the chunks instead."""
        if "targets" in outputs:
            return {}
        from memlab.objectives import masked_cross_entropy  # here: memlab.objectives imports the data tasks

        mask = batch["token_mask"].reshape(batch["token_mask"].shape[0], self.cfg.num_chunks, -1)
        later = jnp.zeros_like(mask).at[:, 1:].set(mask[:, 1:]).reshape(batch["token_mask"].shape)
        loss, _ = masked_cross_entropy(outputs["logits"], batch["targets"], later)
        return {"later_chunks_loss": loss}

