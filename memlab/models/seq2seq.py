"""What the encoder-decoder families (encdec, slot_memory) share: attention between two sequences, the pre-norm
blocks built from it, the token I/O, the decoder, their common base class and their common knob checks.

`Attention` maps queries x [B, T, d] over a memory m [B, S, d] (self-attention when m is x). RoPE is applied only
to self-attention over token sequences (`positions` given); learned slots and cross-attention carry no positions.
Scores are computed explicitly (einsum + fp32 softmax) so probes can read the attention weights.
`EncoderDecoder` holds the token I/O and builds the blocks; a family adds its encoder and the decoder blocks,
`encode_context` (context -> memory) and `answer` (memory, one question -> answer logits).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from memlab.models.layers import (
    ShortConv,
    SwiGLU,
    attention_projections,
    check_heads,
    compute_dtype,
    dense,
    mlp_width,
    rms_norm,
    rope,
    token_embedding,
)
from memlab.models.stages import Stage, StagedFlops

Memory = jax.Array | tuple[jax.Array, ...]  # what cross-attention reads: one array or parts along the sequence
PARTS = ("self", "causal", "cross", "mlp")  # self: bidirectional self-attention; causal: masked to the past
DECODER_PARTS = ("causal", "cross", "mlp")


def check_encoder_decoder(cfg, positive: tuple[str, ...]) -> None:
    """The checks both encoder-decoder families share: heads RoPE can rotate, the family's `positive` knobs and
    `model.conv_kernel` positive integers and a boolean `model.copy_init`; ValueError naming the key otherwise."""
    check_heads(cfg)
    for key in (*positive, "conv_kernel"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"model.{key}={cfg[key]!r} must be a positive integer")
    if not isinstance(cfg.copy_init, bool):
        raise ValueError(f"model.copy_init={cfg.copy_init!r} must be True or False")


class Attention(nnx.Module):
    """`copy_init` starts the layer as a lookup that copies (see `attention_projections`)."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        rope_theta: float = 1e4,
        copy_init: bool = False,
    ):
        self.num_heads, self.head_dim, self.rope_theta, self.dtype = num_heads, d_model // num_heads, rope_theta, dtype
        self.q, self.k, self.v, self.o = attention_projections(d_model, rngs=rngs, dtype=dtype, copy_init=copy_init)

    def weights_and_values(
        self,
        x: jax.Array,
        memory: Memory,
        *,
        causal: bool = False,
        positions: jax.Array | None = None,
        bias: jax.Array | None = None,
        prior: jax.Array | None = None,
        compete: bool = False,
    ) -> tuple[jax.Array, jax.Array]:
        """Attention weights [B, H, T, S] (fp32; each query's sum to 1) and the projected values [B, S, H, Dh].

        `prior` [T, S] is a fixed log-prior of each query for each memory position, added to the scores.
        `bias` [B, S, H] is a per-position salience. Plain attention adds it to every query's score. With
        `compete` (Slot Attention, Locatello et al. 2020) the softmax runs over the queries, so queries compete
        for each memory position instead of all reading the same one; the salience then gates how much of each
        position is read at all (sigmoid), and each query's weights are renormalised over positions."""
        q = self.q(x).reshape(*x.shape[:2], self.num_heads, self.head_dim)
        k, v = self.keys_and_values(memory, x.shape[0])
        if positions is not None:
            q, k = rope(q, positions, self.rope_theta), rope(k, positions, self.rope_theta)
        logits = jnp.einsum("bthd,bshd->bhts", q, k).astype(jnp.float32) / jnp.sqrt(self.head_dim)
        if prior is not None:
            logits = logits + prior.astype(jnp.float32)
        bias = None if bias is None else jnp.transpose(bias, (0, 2, 1))[:, :, None, :].astype(jnp.float32)
        if compete:
            weights = jax.nn.softmax(logits, axis=-2)
            if bias is not None:
                weights = weights * jax.nn.sigmoid(bias)
            return weights / (weights.sum(-1, keepdims=True) + 1e-6), v
        if bias is not None:
            logits = logits + bias
        if causal:
            t, s = logits.shape[-2:]
            logits = jnp.where(jnp.tril(jnp.ones((t, s), bool)), logits, -1e30)
        return jax.nn.softmax(logits, axis=-1), v

    def keys_and_values(self, memory: Memory, rows: int) -> tuple[jax.Array, jax.Array]:
        """Keys and values [rows, S, H, Dh] of a memory: one array, or a tuple of parts concatenated along S.
        A part with fewer rows than the queries is one memory per group of consecutive query rows (a context
        shared by its questions): projected once per group, then repeated, which costs no FLOPs."""
        split = lambda y: y.reshape(*y.shape[:2], self.num_heads, self.head_dim)
        keys, values = [], []
        for part in memory if isinstance(memory, tuple) else (memory,):
            if rows % part.shape[0]:
                raise ValueError(f"a memory of {part.shape[0]} rows cannot serve {rows} query rows (not a divisor)")
            k, v = split(self.k(part)), split(self.v(part))
            keys.append(jnp.repeat(k, rows // part.shape[0], axis=0))
            values.append(jnp.repeat(v, rows // part.shape[0], axis=0))
        return jnp.concatenate(keys, axis=1), jnp.concatenate(values, axis=1)

    def __call__(
        self,
        x: jax.Array,
        memory: Memory | None = None,
        *,
        causal: bool = False,
        positions: jax.Array | None = None,
        bias: jax.Array | None = None,
        prior: jax.Array | None = None,
        compete: bool = False,
    ) -> jax.Array:
        memory = x if memory is None else memory
        probs, v = self.weights_and_values(
            x, memory, causal=causal, positions=positions, bias=bias, prior=prior, compete=compete
        )
        out = jnp.einsum("bhts,bshd->bthd", probs.astype(v.dtype), v)
        return self.o(out.reshape(*x.shape[:2], -1))

    @staticmethod
    def forward_flops(d_model: int, queries: int, keys: int, projected: int | None = None) -> float:
        """q and o projections on the queries, k and v on the `projected` memory vectors (all `keys` unless some
        are shared and counted once elsewhere, see `kv_flops`), scores and weighted sum (dense, unmasked: a causal
        mask is applied to the full product, so that is what runs)."""
        projected = keys if projected is None else projected
        qo = 2.0 * 2 * queries * d_model * d_model
        return qo + Attention.kv_flops(d_model, projected) + 2.0 * 2 * queries * keys * d_model

    @staticmethod
    def kv_flops(d_model: int, keys: int) -> float:
        """The key and value projections of `keys` memory vectors."""
        return 2.0 * 2 * keys * d_model * d_model


class Block(nnx.Module):
    """Pre-norm residual block running `parts` in order, e.g. ("cross", "self", "mlp") for a slot layer or
    ("causal", "cross", "mlp") for a decoder layer. The memory is normalised by the caller."""

    def __init__(self, cfg, parts: tuple[str, ...], *, rngs: nnx.Rngs, dtype, d_ff: int):
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            raise ValueError(f"unknown block parts {unknown}; accepted: {', '.join(PARTS)}")
        self.parts = tuple(parts)
        self.norms = nnx.List([rms_norm(cfg.d_model, rngs=rngs, dtype=dtype) for _ in parts])
        self.layers = nnx.List(
            [
                SwiGLU(cfg.d_model, d_ff, rngs=rngs, dtype=dtype)
                if p == "mlp"
                else Attention(
                    cfg.d_model,
                    cfg.num_heads,
                    rngs=rngs,
                    dtype=dtype,
                    rope_theta=cfg.rope_theta,
                    copy_init=cfg.copy_init,
                )
                for p in parts
            ]
        )

    def __call__(
        self,
        x: jax.Array,
        memory: Memory | None = None,
        *,
        positions: jax.Array | None = None,
        read: dict | None = None,
    ) -> jax.Array:
        """`read`: extra arguments of the cross-attention (`bias`, `prior`, `compete`; see Attention)."""
        for part, norm, layer in zip(self.parts, self.norms, self.layers, strict=True):
            h = norm(x)
            if part == "mlp":
                x = x + layer(h)
            elif part == "cross":
                x = x + layer(h, memory, **(read or {}))
            else:
                x = x + layer(h, causal=part == "causal", positions=positions)
        return x

    @staticmethod
    def forward_flops(
        parts: tuple[str, ...], d_model: int, d_ff: int, queries: int, memory: int, shared: int = 0
    ) -> float:
        """Forward FLOPs of one block for `queries` tokens over a memory of `memory` vectors, of which `shared`
        have their keys and values projected once per context and counted there (`Attention.kv_flops`)."""
        total = 0.0
        for part in parts:
            if part == "mlp":
                total += queries * SwiGLU.forward_flops_per_token(d_model, d_ff)
            elif part == "cross":
                total += Attention.forward_flops(d_model, queries, memory, projected=memory - shared)
            else:
                total += Attention.forward_flops(d_model, queries, queries)
        return total


class TokenIO(nnx.Module):
    """Token embedding (shared by context, question and answer), the context front end and the output head.

    The front end adds a short causal convolution to the context embeddings: without it a cross-attention read
    of the context sees a bag of tokens and cannot tell which value follows which key. With `copy_init` its taps
    start equal (a causal sum), so a fact's key and value embeddings reach its last position unscrambled, where a
    copying attention layer (see Attention) can match and read them; random per-channel taps would hide them.
    """

    def __init__(self, cfg, *, rngs: nnx.Rngs, dtype):
        self.cfg = cfg
        self.embed = token_embedding(cfg.vocab_size, cfg.d_model, rngs=rngs, dtype=dtype)
        taps = nnx.initializers.constant(0.5) if cfg.copy_init else None
        self.context_conv = ShortConv(cfg.d_model, cfg.conv_kernel, rngs=rngs, dtype=dtype, init=taps)
        self.final_norm = rms_norm(cfg.d_model, rngs=rngs, dtype=dtype)
        if not cfg.tie_embeddings:
            self.unembed = dense(cfg.d_model, cfg.vocab_size, ("embed", "vocab"), rngs=rngs, dtype=dtype)

    def context(self, tokens: jax.Array) -> jax.Array:
        """Context embeddings [B, L, d] with the causal front-end conv added."""
        x = self.embed(tokens)
        return x + self.context_conv(x)

    def logits(self, x: jax.Array) -> jax.Array:
        """fp32 logits of states x [..., d]: the final norm, then the output head."""
        x = self.final_norm(x)
        out = self.embed.attend(x) if self.cfg.tie_embeddings else self.unembed(x)
        return out.astype(jnp.float32)

    def embedding_params(self) -> int:
        per_table = self.cfg.vocab_size * self.cfg.d_model
        return per_table if self.cfg.tie_embeddings else 2 * per_table

    def context_flops(self, context_len: int) -> float:
        return context_len * ShortConv.forward_flops_per_token(self.cfg.d_model, self.cfg.conv_kernel)

    def logits_flops(self, tokens: int) -> float:
        return 2.0 * tokens * self.cfg.d_model * self.cfg.vocab_size


class EncoderDecoder(StagedFlops, nnx.Module):
    """The base of the encoder-decoder families: the family's `check(cfg)` first, then config, compute dtype, MLP
    width and the token I/O; a family then builds its encoder and last `decoder_blocks = self.blocks(DECODER_PARTS,
    ...)` (parameters are drawn in that order), and defines `encode_context(context)` -> memory and
    `answer(memory, question, answer_inputs)` -> logits [B, A, V], which ends in `decode`. Called on a context-QA
    batch; returns answer logits [B, Q, A, V] with the answer targets and mask to score them."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        self.check(cfg)  # the family's
        self.cfg = cfg
        self.dtype = compute_dtype(cfg.dtype)
        self.d_ff = mlp_width(cfg.d_model, cfg.mlp_ratio)
        self.io = TokenIO(cfg, rngs=rngs, dtype=self.dtype)

    @staticmethod
    def defaults() -> dict:
        """The `model.*` knobs every encoder-decoder family reads; a family's `defaults()` adds its own."""
        return {
            "d_model": 64,
            "num_heads": 2,
            "mlp_ratio": 4.0,
            "rope_theta": 10_000.0,
            "conv_kernel": 4,  # taps of the causal convolution on the context embeddings
            "tie_embeddings": False,
            "copy_init": True,  # attention layers start as copying lookups, the context conv as a causal sum (TokenIO)
        }

    def blocks(self, parts: tuple[str, ...], num_layers: int, *, rngs: nnx.Rngs) -> nnx.List:
        """`num_layers` pre-norm blocks running `parts` (see Block)."""
        return nnx.List(
            [Block(self.cfg, parts, rngs=rngs, dtype=self.dtype, d_ff=self.d_ff) for _ in range(num_layers)]
        )

    def norm(self, *, rngs: nnx.Rngs) -> nnx.RMSNorm:
        return rms_norm(self.cfg.d_model, rngs=rngs, dtype=self.dtype)

    def decode(self, memory: Memory, question: jax.Array, answer_inputs: jax.Array) -> jax.Array:
        """Answer logits [B, A, V] of the causal decoder over [question; answer] that cross-attends to `memory`.
        The question leads the sequence so the first answer position's query already holds the key it looks up: a
        single hop into the memory, where a decoder over the answer alone must find the key through a second
        memory first."""
        tokens = jnp.concatenate([question, answer_inputs], axis=1)
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        x = self.io.embed(tokens)
        for block in self.decoder_blocks:
            x = block(x, memory, positions=positions)
        return self.io.logits(x[:, question.shape[1] :])

    def decoder_stages(
        self, num_q: int, question_len: int, answer_len: int, memory_len: int, shared: int, memory: tuple[str, ...]
    ) -> list[Stage]:
        """FLOP stages of `decode` for `num_q` questions per example over a memory of `memory_len` vectors (from the
        stages `memory`), of which the `shared` ones have their keys and values projected once per context."""
        cfg, stages, previous = self.cfg, [], "io"
        for i in range(cfg.num_layers):
            flops = num_q * Block.forward_flops(
                DECODER_PARTS, cfg.d_model, self.d_ff, question_len + answer_len, memory_len, shared
            )
            flops += Attention.kv_flops(cfg.d_model, shared)
            stages.append(Stage(f"decoder_blocks/{i}", flops, (f"decoder_blocks/{i}",), (previous, *memory)))
            previous = stages[-1].name
        head = ("io/final_norm", "io/embed" if cfg.tie_embeddings else "io/unembed")
        return [*stages, Stage("head", num_q * self.io.logits_flops(answer_len), head, (previous,))]

    def __call__(self, batch: dict) -> dict:
        """Answer every question of the batch ([B, Q, ...]) from one encoding of each context: the memory [B, M, d]
        serves the B * Q question rows, and its keys and values are projected once per context (Attention)."""
        memory = self.encode_context(batch["context"])
        question, answer_inputs = batch["question"], batch["answer_inputs"]
        b, num_q = question.shape[:2]
        flat = lambda t: t.reshape(b * num_q, *t.shape[2:])
        logits = self.answer(memory, flat(question), flat(answer_inputs))
        return {
            "logits": logits.reshape(b, num_q, *logits.shape[1:]),
            "targets": batch["answer_targets"],
            "loss_mask": batch["answer_mask"],
        }

    def embedding_params(self) -> int:
        return self.io.embedding_params()
