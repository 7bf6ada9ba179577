"""Full encoder-decoder (`model.name = "encdec"`): the baseline the slot memory compresses away.

The encoder runs bidirectional self-attention over all L context tokens (never the question); the decoder runs
causal self-attention over [question; answer] and cross-attends to all L encoded tokens. With
`model.encoder_layers=0` the memory is the context's embeddings after the short causal conv, the same reading of
the context the slot model starts from: the baseline without the encoder's self-attention cost. Like the slot model it
can encode a context once and answer many questions, so the two differ only in the memory: L token vectors here,
k slots there. The token I/O, the decoder and the batched call come from `seq2seq.EncoderDecoder`.

The anchor: the seed claim's (seed 000) full encoder-decoder baseline, described in words only (DESIGN.md's
family table); there is no code to check against, so what is listed is memlab's reading of it.

Deviations from the anchor:
- Both families share memlab's context QA tricks, chosen by the runs in BENCHMARKS.md: `model.copy_init` True
  (attention starts as a copying lookup, the context conv as a causal sum), a short causal conv on the context
  embeddings (`model.conv_kernel`), the question leading the answer in the decoder.
- `model.encoder_layers=0` is memlab's cheaper baseline (no encoder self-attention); the seed's has an encoder.
- Sizes: CPU-sized defaults (d 64, 3 encoder and 2 decoder layers, 2 heads); the seed names none.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from memlab.models.seq2seq import DECODER_PARTS, Block, EncoderDecoder, check_encoder_decoder
from memlab.models.stages import Stage, chain
from memlab.parallel import constrain
from memlab.registry import MODELS

ENCODER_PARTS = ("self", "mlp")


@MODELS.register("encdec")
class EncDec(EncoderDecoder):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs)
        self.encoder_blocks = self.blocks(ENCODER_PARTS, cfg.encoder_layers, rngs=rngs)
        self.encoder_norm = self.norm(rngs=rngs)
        self.decoder_blocks = self.blocks(DECODER_PARTS, cfg.num_layers, rngs=rngs)

    @staticmethod
    def defaults() -> dict:
        """The family's `model.*` knobs with their defaults."""
        return {**EncoderDecoder.defaults(), "num_layers": 2, "encoder_layers": 3}  # num_layers: decoder layers

    @staticmethod
    def check(cfg) -> None:
        check_encoder_decoder(cfg, positive=())
        if not isinstance(cfg.encoder_layers, int) or cfg.encoder_layers < 0:
            raise ValueError(
                f"model.encoder_layers={cfg.encoder_layers!r} must be an integer >= 0 (0: the decoder reads the "
                "context's embeddings after the short conv, as the slot model's slots do)"
            )

    def encode_context(self, context: jax.Array) -> jax.Array:
        """Encoded context [B, L, d]: the decoder's memory."""
        x = self.io.context(context)
        positions = jnp.broadcast_to(jnp.arange(context.shape[1]), context.shape)
        for block in self.encoder_blocks:
            x = constrain(block(x, positions=positions), ("batch", "seq", "embed"))
        return self.encoder_norm(x)

    def answer(self, memory: jax.Array, question: jax.Array, answer_inputs: jax.Array) -> jax.Array:
        """Answer logits [B * Q, A, V] for one question per row from cached encoded contexts [B, L, d] (each serves
        Q consecutive rows)."""
        return self.decode(memory, question, answer_inputs)

    def flop_stages(self, shapes: dict) -> list[Stage]:
        """The context's front end and encoding once per example, then decoding once per question (the context's
        keys and values once per example, in each decoder layer's stage)."""
        cfg, d = self.cfg, self.cfg.d_model
        length, (num_q, lq), la = shapes["context"][0], shapes["question"], shapes["answer_inputs"][1]
        stages = [Stage("io", self.io.context_flops(length), ("io/embed", "io/context_conv"))]
        block = Block.forward_flops(ENCODER_PARTS, d, self.d_ff, length, length)
        stages += [Stage(f"encoder_blocks/{i}", block, (f"encoder_blocks/{i}",)) for i in range(cfg.encoder_layers)]
        stages = chain([*stages, Stage("encoder_norm", 0.0, ("encoder_norm",))])
        return stages + self.decoder_stages(num_q, lq, la, length, shared=length, memory=("encoder_norm",))
