"""Text in chunks: an example is `data.num_chunks` (n) consecutive chunks of `data.chunk_len` (L) tokens of
prepared byte text, for the memory models (memlab.models.memory_model) that decode each chunk from its own tokens
and one memory vector per earlier chunk.

Fields, all [n * L]: `inputs` (the n chunks back to back), `targets` (the next token of the stream) and
`token_mask`, 0 at the last position of every chunk: the token after it begins the next chunk, which a chunk's
decoder never sees, so the first token of a chunk is never scored.

The vocabulary is the byte tokeniser's 257 ids (256 = EOS) plus two reserved ids the copy pass of memlab.passes
writes (`DELIMITER` at the boundary, `BLANK` for the tokens the decoder must recall from memory): special tokens
never reuse a real byte's id (pitfall A.4 of the research notes). Windows are read by the text task (same
shuffling, resumption and host shards), documents concatenated with EOS between them.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np

from memlab.data.tasks.text import Text
from memlab.registry import TASKS

TEXT_VOCAB = 257  # the byte tokeniser's ids, EOS included
DELIMITER, BLANK = TEXT_VOCAB, TEXT_VOCAB + 1


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

    @staticmethod
    def defaults() -> dict:
        """The task's `data.*` knobs with their defaults."""
        return {
            "path": "",  # directory written by `memlab data prepare` (byte tokeniser)
            "num_chunks": 4,  # n: chunks per example; the copy pass needs an even n (its halves are whole chunks)
            "chunk_len": 64,  # L: tokens per chunk
            "vocab_size": BLANK + 1,  # 257 byte ids, DELIMITER, BLANK; larger pads the embedding table
            "verify": "sha256",  # checksum every shard on open | size (stat only)
        }

    @staticmethod
    def check(cfg) -> None:
        """ValueError naming the key for non-positive sizes, a vocabulary without the reserved ids, or a corpus the
        text task rejects or that is not byte-tokenised."""
        for key in ("num_chunks", "chunk_len"):
            if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 1:
                raise ValueError(f"data.{key}={cfg[key]!r} must be a positive integer")
        if cfg.chunk_len < 2:
            raise ValueError(f"data.chunk_len={cfg.chunk_len} must be >= 2 (a chunk's first token is never scored)")
        if cfg.vocab_size < BLANK + 1:
            raise ValueError(
                f"data.vocab_size={cfg.vocab_size} cannot hold the {TEXT_VOCAB} byte ids, DELIMITER and BLANK: "
                f"need >= {BLANK + 1}"
            )
        sub = _text_config(cfg)
        try:
            Text.check(sub)
        except ValueError as err:
            raise type(err)(f"data.path={cfg.path!r} (read in windows of num_chunks * chunk_len tokens): {err}") from None
        if sub.vocab_size != TEXT_VOCAB:
            raise ValueError(
                f"data.path={cfg.path!r} has a tokeniser of {sub.vocab_size} ids; this task reserves ids "
                f"{DELIMITER} and {BLANK} after the byte tokeniser's {TEXT_VOCAB}: prepare it with the byte tokeniser"
            )

    @staticmethod
    def example_shapes(cfg) -> dict[str, tuple[int, ...]]:
        t = cfg.num_chunks * cfg.chunk_len
        return {k: (t,) for k in ("inputs", "targets", "token_mask")}

    def __len__(self) -> int:
        return len(self.text)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        window = self.text[index]
        token_mask = np.ones((self.cfg.num_chunks, self.cfg.chunk_len), np.float32)
        token_mask[:, -1] = 0.0
        return {"inputs": window["inputs"], "targets": window["targets"], "token_mask": token_mask.reshape(-1)}

    def eval_metrics(self, outputs: dict, batch: dict) -> dict:
        """`later_chunks_loss`: next-token cross-entropy over chunks 1..n-1, the ones an earlier chunk's memory can
        inform (chunk 0 has none to read), so memory and no-memory decoders compare where memory matters. None for
        an autoencoder, whose outputs regenerate the chunks instead."""
        if "targets" in outputs:
            return {}
        from memlab.objectives import masked_cross_entropy  # here: objectives import this module's ids (passes)

        mask = batch["token_mask"].reshape(batch["token_mask"].shape[0], self.cfg.num_chunks, -1)
        later = jnp.zeros_like(mask).at[:, 1:].set(mask[:, 1:]).reshape(batch["token_mask"].shape)
        loss, _ = masked_cross_entropy(outputs["logits"], batch["targets"], later)
        return {"later_chunks_loss": loss}

