"""Full encoder-decoder (`model.name = "encdec"`): the baseline the slot memory compresses away.

The encoder runs bidirectional self-attention over all L context tokens (never the question); the decoder runs
causal self-attention over [question; answer] and cross-attends to all L encoded tokens. Like the slot model it
can encode a context once and answer many questions, so the two differ only in the memory: L token vectors here,
k slots there. Called on a context-QA batch; returns answer logits [B, Q, A, V] with their targets and mask.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from memlab.models.cross_attention import Block, TokenIO, check_encoder_decoder, decode
from memlab.models.layers import compute_dtype, mlp_width, rms_norm
from memlab.models.slot_memory import answer_all
from memlab.parallel import constrain
from memlab.registry import MODELS

ENCODER_PARTS = ("self", "mlp")
DECODER_PARTS = ("causal", "cross", "mlp")


@MODELS.register("encdec")
class EncDec(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        self.check(cfg)
        self.cfg = cfg
        dtype = compute_dtype(cfg.dtype)
        self.d_ff = d_ff = mlp_width(cfg.d_model, cfg.mlp_ratio)
        self.io = TokenIO(cfg, rngs=rngs, dtype=dtype)
        self.encoder_blocks = nnx.List([Block(cfg, ENCODER_PARTS, rngs=rngs, dtype=dtype, d_ff=d_ff)
                                        for _ in range(cfg.encoder_layers)])
        self.encoder_norm = rms_norm(cfg.d_model, rngs=rngs, dtype=dtype)
        self.decoder_blocks = nnx.List([Block(cfg, DECODER_PARTS, rngs=rngs, dtype=dtype, d_ff=d_ff)
                                        for _ in range(cfg.num_layers)])

    @staticmethod
    def defaults() -> dict:
        """The family's `model.*` knobs with their defaults."""
        return {
            "d_model": 64,
            "num_heads": 2,
            "num_layers": 2,  # decoder layers
            "encoder_layers": 3,
            "mlp_ratio": 4.0,
            "rope_theta": 10_000.0,
            "conv_kernel": 4,  # taps of the causal convolution on the context embeddings
            "tie_embeddings": False,
            "copy_init": True,  # attention layers start as copying lookups, the context conv as a causal sum (TokenIO)
        }

    @staticmethod
    def check(cfg) -> None:
        check_encoder_decoder(cfg, positive=("encoder_layers", "conv_kernel"))

    def encode_context(self, context):
        """Encoded context [B, L, d]: the decoder's memory."""
        x = self.io.context(context)
        positions = jnp.broadcast_to(jnp.arange(context.shape[1]), context.shape)
        for block in self.encoder_blocks:
            x = constrain(block(x, positions=positions), ("batch", "seq", "embed"))
        return self.encoder_norm(x)

    def answer(self, memory, question, answer_inputs):
        """Answer logits [B, A, V] for one question per row from a cached encoded context."""
        return decode(self.io, self.decoder_blocks, memory, question, answer_inputs)

    def __call__(self, batch: dict) -> dict:
        return answer_all(self, self.encode_context(batch["context"]), batch)

    def embedding_params(self) -> int:
        return self.io.embedding_params()

    def forward_flops_per_example(self, shapes: dict) -> float:
        cfg, d = self.cfg, self.cfg.d_model
        length, (num_q, lq), la = shapes["context"][0], shapes["question"], shapes["answer_inputs"][1]
        total = self.io.context_flops(length)
        total += cfg.encoder_layers * Block.forward_flops(ENCODER_PARTS, d, self.d_ff, length, length)
        per_q = cfg.num_layers * Block.forward_flops(DECODER_PARTS, d, self.d_ff, lq + la, length)
        per_q += self.io.logits_flops(la)
        return total + num_q * per_q

