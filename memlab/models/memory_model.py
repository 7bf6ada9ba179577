"""Memory models (`model.name = "memory_model"`, Badger arXiv 2602.13466): an encoder compresses each chunk of text
into one memory vector; a decoder predicts a chunk's tokens from its own tokens and the memories of earlier chunks.

Examples are n = `model.num_chunks` chunks of L tokens back to back, [B, n L] (the `text_chunks` task; the model's
num_chunks follows the task's). Two modes (`model.mode`):

    memory        the decoder of chunk c reads [m_0, ..., m_{c-1}, p, ..., p, emb(x_c)]: the memories of the chunks
                  before it, then n - c fixed all-ones pad vectors p, so its tokens always start at position n;
                  causal self-attention over the row, logits at the token positions predict the next token within
                  the chunk. The n rows decode in parallel as a batch of B n; the last chunk is never encoded.
    autoencoder   every chunk is encoded and regenerated from its memory e alone: the decoder's input at position i
                  is P e[(i mod d) : (i mod d) + d/2], taken cyclically over e (one shared P: d/2 -> d; the
                  "unrolled" embedding, since repeating e at every position trains a transformer badly); its logits
                  at position i predict token i, returned with those targets so `next_token` scores them.

`model.memory = "none"` is the no-memory control: every memory is replaced by the pad vector p, so the decoder
gets nothing from the encoder (memory mode: from earlier chunks; autoencoder: from the chunk itself, which leaves
it only the byte statistics, the calibration floor of the memory probe, memlab.probes.memory_info).

The encoder (`encoder/`) owns its token embedding, blocks and final norm, so freezing it (`train.trainable` over
`decoder/`) freezes everything it was trained with (pitfall A.4 of the research notes); an autoencoder's encoder
loads into a memory model under the same paths. Blocks are the LM's: their token mixer is attention with RoPE
(`model.mixer = "attn"`, with `model.qkv_conv`) or Badger's masked mixer (`"masked"`, memlab.models.mixers.masked:
a learned causal L x L token-mixing matrix per group of d / `model.mixer_heads` channels). A masked mixer is built
for one row length, so the encoder's are built for `model.chunk_len` L (which follows the task's data.chunk_len)
and the decoder's for its rows, n + L (memory) or L (autoencoder); inputs of another chunk length are an error.
The anchor: blbadger/memorymodels @ b5bbc77 (`VariableMemoryTransformer` with `fixed_memory=True`,
`UnrolledAutoencodingTransformer`).

Deviations from the anchor:
- Blocks are memlab's LM blocks (pre-RMSNorm, SwiGLU of width 4 d rounded to 16, RoPE), close to the anchor's HF
  Llama blocks (intermediate size 4 d); memlab's initialisation, not HF's N(0, 0.02).
- Sizes: CPU-sized defaults (d 64, 2 + 2 layers, 4 chunks of 64); the anchor's drivers run d 512, 16 decoder
  layers, 4 heads, 4 chunks of 256 (`model.d_model`, `model.num_layers`, `model.chunk_len`, ...).
- `model.summary`: "last" (the anchor's x[:, -1]) | "penultimate" (the anchor's probe of causal-LM encoders) |
  "mean" (memlab's). `model.compression`: 1 (the anchor's default); c > 1 is the anchor's down/up, without their
  biases.
- `model.memory="none"`: the anchor's `no_memory` (every memory an all-ones vector).
- `model.mixer`: "attn" (the anchor's) | "masked" (the anchor's mixer alternative, mixers/masked.py).
- Not built: `fixed_memory=False` (variable token positions), the recurrent memory transformer, `decoder_proj`
  (encoder and decoder of different widths). The objectives (copy, blank copy, combined) and the frozen-encoder
  curriculum live in memlab.objectives and train.curriculum, not here.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from memlab.models.layers import check_heads, compute_dtype, dense, rms_norm, token_embedding
from memlab.models.lm import ACTIVATION, Block, block_stages
from memlab.models.mixers.masked import MaskedMixer
from memlab.models.stages import Stage, StagedFlops, chain
from memlab.parallel import constrain
from memlab.registry import MIXERS, MODELS

MODES = ("memory", "autoencoder")
MEMORIES = ("read", "none")
SUMMARIES = ("last", "penultimate", "mean")
MIXER_KINDS = ("attn", "masked")


def _masked(cfg) -> bool:
    return cfg.get("mixer", "attn") == "masked"  # .get: runs saved before the knob use attention


def _mixer(cfg):
    """The class of the blocks' token mixer, for `block_stages` and `state_size`."""
    return MaskedMixer if _masked(cfg) else MIXERS.get("attn")


def _chunk_len(cfg) -> int:
    return cfg.get("chunk_len", 64)  # .get: runs saved before the knob (attention only) never read it


def _blocks(cfg, num: int, seq_len: int, *, rngs: nnx.Rngs, dtype) -> nnx.List:
    """`num` Blocks for rows of `seq_len` positions: a masked mixer is built for that length, attention for any."""
    mixer = (lambda: MaskedMixer(cfg, seq_len, rngs=rngs, dtype=dtype)) if _masked(cfg) else (lambda: "attn")
    return nnx.List([Block(cfg, mixer(), rngs=rngs, dtype=dtype) for _ in range(num)])


def _run(blocks: nnx.List, x: jax.Array) -> jax.Array:
    positions = jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape[:2])
    for block in blocks:
        x = constrain(block(x, positions=positions), ACTIVATION)
    return x


def unroll_index(seq_len: int, d: int) -> jax.Array:
    """[seq_len, d/2] indices into a memory of width d: row i reads e[(i mod d) + j] for j < d/2, wrapping around
    the end of e (by d, not by the sequence length: the anchor's first version wrapped by the length)."""
    return (jnp.arange(seq_len)[:, None] % d + jnp.arange(d // 2)[None, :]) % d


class Encoder(nnx.Module):
    """Chunks [R, L] -> memories [R, d]: own token embedding, causal blocks, final norm, then the state at the last
    position (Badger's memories), the penultimate one (a causal LM's last position is never trained to predict) or
    the mean; with `model.compression` c > 1 a bottleneck d -> d/c -> d."""

    def __init__(self, cfg, *, rngs: nnx.Rngs, dtype):
        d, c = cfg.d_model, cfg.compression
        self.summary = cfg.summary
        self.embed = token_embedding(cfg.vocab_size, d, rngs=rngs, dtype=dtype)
        self.blocks = _blocks(cfg, cfg.encoder_layers, _chunk_len(cfg), rngs=rngs, dtype=dtype)
        self.final_norm = rms_norm(d, rngs=rngs, dtype=dtype)
        self.down = dense(d, d // c, ("embed", None), rngs=rngs, dtype=dtype) if c > 1 else None
        self.up = dense(d // c, d, (None, "embed"), rngs=rngs, dtype=dtype) if c > 1 else None

    def __call__(self, tokens: jax.Array) -> jax.Array:
        h = self.final_norm(_run(self.blocks, self.embed(tokens)))
        m = {"last": lambda: h[:, -1], "penultimate": lambda: h[:, -2], "mean": lambda: h.mean(axis=1)}[self.summary]()
        return m if self.down is None else self.up(self.down(m))

    @staticmethod
    def flop_stages(cfg, rows: int, seq_len: int) -> list[Stage]:
        """Chained stages of encoding `rows` chunks of `seq_len` tokens, ending in `encoder/summary`."""
        d, c = cfg.d_model, cfg.compression
        bottleneck = 2.0 * 2 * d * (d // c) * rows if c > 1 else 0.0
        summary = ("encoder/final_norm", *(("encoder/down", "encoder/up") if c > 1 else ()))
        return chain(
            [
                Stage("encoder/embed", 0.0, ("encoder/embed",)),
                *block_stages(cfg, [_mixer(cfg)] * cfg.encoder_layers, seq_len, prefix="encoder/", rows=rows),
                Stage("encoder/summary", bottleneck, summary),
            ]
        )


class Decoder(nnx.Module):
    """Causal blocks over rows of input vectors, final norm, fp32 logits. Its input layer depends on the mode: a
    token embedding (memory) or the unrolled projection P (autoencoder), which reads no tokens."""

    def __init__(self, cfg, *, rngs: nnx.Rngs, dtype):
        d = cfg.d_model
        memory = cfg.mode == "memory"
        self.embed = token_embedding(cfg.vocab_size, d, rngs=rngs, dtype=dtype) if memory else None
        self.unroll = None if memory else dense(d // 2, d, (None, "embed"), rngs=rngs, dtype=dtype)
        row = cfg.num_chunks + _chunk_len(cfg) if memory else _chunk_len(cfg)  # the masked mixer's row length
        self.blocks = _blocks(cfg, cfg.num_layers, row, rngs=rngs, dtype=dtype)
        self.final_norm = rms_norm(d, rngs=rngs, dtype=dtype)
        self.unembed = dense(d, cfg.vocab_size, ("embed", "vocab"), rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array, skip: int) -> jax.Array:
        """Logits [R, S - skip, V] of rows x [R, S, d] at positions skip.. (the prefix is read, not scored)."""
        x = _run(self.blocks, x)[:, skip:]
        return constrain(self.unembed(self.final_norm(x)).astype(jnp.float32), ("batch", "seq", "vocab"))


@MODELS.register("memory_model")
class MemoryModel(StagedFlops, nnx.Module):
    """`model.name = "memory_model"`. Called on a batch dict with `inputs` [B, n L]."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        self.check(cfg)
        self.cfg = cfg
        dtype = compute_dtype(cfg.dtype)
        self.encoder = Encoder(cfg, rngs=rngs, dtype=dtype)
        self.decoder = Decoder(cfg, rngs=rngs, dtype=dtype)

    @staticmethod
    def defaults() -> dict:
        """The family's `model.*` knobs with their defaults."""
        return {
            "mode": "memory",  # memory (decode each chunk with earlier chunks' memories) | autoencoder
            "memory": "read",  # read | none: every memory replaced by the pad vector (the no-memory control)
            "num_chunks": 4,  # n: chunks per example (follows data.num_chunks where the task has it)
            "summary": "last",  # the encoder's memory: last | penultimate position | mean over the chunk
            "compression": 1,  # c > 1: bottleneck d -> d/c -> d on each memory
            "d_model": 64,
            "encoder_layers": 2,
            "num_layers": 2,  # decoder layers
            "num_heads": 2,
            "mlp_ratio": 4.0,
            "rope_theta": 10_000.0,
            "qkv_conv": False,  # short causal convolutions on queries, keys and values (encoder and decoder)
            "conv_kernel": 4,
            "copy_init": False,  # attention starts as a copying lookup (layers.attention_projections)
            # token mixer of every encoder and decoder block: attn (causal attention with RoPE) | masked (Badger's
            # masked mixer: a learned causal L x L matrix, built for the rows' length; mixers/masked.py)
            "mixer": "attn",
            "mixer_heads": 1,  # masked: separate mixing matrices for this many groups of channels (divides d_model)
            "chunk_len": 64,  # L: tokens per chunk (follows data.chunk_len); masked mixers are built for it
        }

    @staticmethod
    def check(cfg) -> None:
        """ValueError naming the key for an unknown mode, summary or mixer, sizes that are not positive integers, a
        compression or mixer_heads that does not divide d_model, heads RoPE cannot rotate, or non-boolean switches."""
        if cfg.mode not in MODES:
            raise ValueError(f"model.mode={cfg.mode!r} is not accepted; choose one of {', '.join(MODES)}")
        memory = cfg.get("memory", "read")  # runs saved before the knob read their memories
        if memory not in MEMORIES:
            raise ValueError(f"model.memory={memory!r} is not accepted; choose one of {', '.join(MEMORIES)}")
        if cfg.summary not in SUMMARIES:
            raise ValueError(f"model.summary={cfg.summary!r} is not accepted; choose one of {', '.join(SUMMARIES)}")
        mixer = cfg.get("mixer", "attn")
        if mixer not in MIXER_KINDS:
            raise ValueError(f"model.mixer={mixer!r} is not accepted; choose one of {', '.join(MIXER_KINDS)}")
        sizes = {k: cfg[k] for k in ("num_chunks", "compression", "encoder_layers", "num_layers", "conv_kernel")}
        sizes.update(mixer_heads=cfg.get("mixer_heads", 1), chunk_len=_chunk_len(cfg))
        for key, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{key}={value!r} must be a positive integer")
        for key in ("compression", "mixer_heads"):
            if cfg.d_model % sizes[key]:
                raise ValueError(f"model.{key}={sizes[key]} must divide model.d_model={cfg.d_model}")
        check_heads(cfg)
        for key in ("qkv_conv", "copy_init"):
            if not isinstance(cfg[key], bool):
                raise ValueError(f"model.{key}={cfg[key]!r} must be True or False")

    def _chunk_len(self, seq_len: int) -> int:
        """The chunk length of inputs of seq_len tokens; under the masked mixer it must be the one its matrices
        were built for (attention takes any)."""
        n = self.cfg.num_chunks
        if seq_len % n:
            raise ValueError(f"inputs of {seq_len} tokens do not split into model.num_chunks={n} chunks")
        if _masked(self.cfg) and seq_len // n != _chunk_len(self.cfg):
            raise ValueError(
                f"inputs of {seq_len} tokens are {n} chunks of {seq_len // n}, but model.mixer=masked was built for "
                f"model.chunk_len={_chunk_len(self.cfg)}"
            )
        return seq_len // n

    def __call__(self, batch: dict) -> dict:
        tokens = batch["inputs"]
        b, t = tokens.shape
        n, L = self.cfg.num_chunks, self._chunk_len(t)
        chunks = tokens.reshape(b, n, L)
        if self.cfg.mode == "autoencoder":
            out = self.reconstruct(chunks.reshape(b * n, L))
            return {k: v.reshape(b, t, *v.shape[2:]) for k, v in out.items()}
        return {"logits": self.decode(chunks).reshape(b, t, -1)}

    def decode(self, chunks: jax.Array) -> jax.Array:
        """Next-token logits [B, n, L, V] of chunks [B, n, L], each from its own tokens and earlier memories."""
        b, n, L = chunks.shape
        d = self.cfg.d_model
        emb = self.decoder.embed(chunks)
        memories = jnp.ones((b, n, d), emb.dtype)  # memory k of chunk k; the last chunk's is never formed
        if n > 1 and self.reads:
            encoded = self.encoder(chunks[:, :-1].reshape(b * (n - 1), L)).reshape(b, n - 1, d)
            memories = memories.at[:, : n - 1].set(encoded.astype(emb.dtype))
        slot = jnp.arange(n)
        read = (slot[None, :] < slot[:, None])[None, :, :, None]  # [1, chunk c, slot k, 1]: k < c
        prefix = jnp.where(read, memories[:, None], jnp.ones((), emb.dtype))  # [B, n, n, d]; the rest are pads
        rows = jnp.concatenate([prefix, emb], axis=2).reshape(b * n, n + L, d)
        return self.decoder(rows, skip=n).reshape(b, n, L, -1)

    def reconstruct(self, chunks: jax.Array) -> dict:
        """The autoencoder on chunks [R, L]: logits [R, L, V] of every token from the chunk's memory alone, with
        the targets they predict (the tokens themselves) and a token_mask of ones."""
        L, d = chunks.shape[1], self.cfg.d_model
        e = self.encoder(chunks) if self.reads else jnp.ones((chunks.shape[0], d), self.decoder.unroll.dtype)
        x = self.decoder.unroll(e[:, unroll_index(L, d)])
        return {"logits": self.decoder(x, skip=0), "targets": chunks, "token_mask": jnp.ones(chunks.shape, jnp.float32)}

    @property
    def reads(self) -> bool:
        """Whether the decoder reads the encoder's memories (model.memory="read") or only pads ("none")."""
        return self.cfg.get("memory", "read") == "read"

    def embedding_params(self) -> int:
        """The encoder's embedding, the decoder's (memory mode) and the unembedding."""
        tables = 3 if self.cfg.mode == "memory" else 2
        return tables * self.cfg.vocab_size * self.cfg.d_model

    def state_size(self, seq_len: int) -> int:
        """Numbers one example carries while decoding its last chunk: the n - 1 memories (the pads are fixed) and
        each decoder layer's mixer state over its row of n + L positions (attention's cache, or the masked mixer's
        inputs so far); the autoencoder, one memory and L; no memory under model.memory="none"."""
        cfg = self.cfg
        n, L = cfg.num_chunks, self._chunk_len(seq_len)
        memories, row = (n - 1, n + L) if cfg.mode == "memory" else (1, L)
        return memories * self.reads * cfg.d_model + cfg.num_layers * _mixer(cfg).state_size(cfg, row)

    def flop_stages(self, shapes: dict) -> list[Stage]:
        """Analytic forward FLOPs of one example by stage: the encoder on n - 1 chunks (memory) or n (autoencoder),
        the decoder's input layer, its blocks on n rows of n + L (memory) or L positions, and the logits at the
        L token positions of each row (see memlab.models.stages). Under model.memory="none" the encoder never
        runs: a stage of no FLOPs holds its parameters."""
        cfg = self.cfg
        n = cfg.num_chunks
        L = self._chunk_len(shapes["inputs"][-1])
        d = cfg.d_model
        encoded = n - 1 if cfg.mode == "memory" else n
        encoder = Encoder.flop_stages(cfg, encoded, L) if self.reads else [Stage("encoder", 0.0, ("encoder",))]
        summary = ("encoder/summary",) if self.reads else ()
        if cfg.mode == "memory":
            first = [Stage("decoder/embed", 0.0, ("decoder/embed",))]
            inputs = (*summary, "decoder/embed")
            row = n + L
        else:
            first, row = [], L
            encoder.append(Stage("decoder/unroll", 2.0 * (d // 2) * d * L * n, ("decoder/unroll",), summary))
            inputs = ("decoder/unroll",)
        blocks = block_stages(cfg, [_mixer(cfg)] * cfg.num_layers, row, prefix="decoder/", rows=n)
        blocks[0] = dataclasses.replace(blocks[0], reads=inputs)
        head = Stage("decoder/head", 2.0 * d * cfg.vocab_size * L * n, ("decoder/final_norm", "decoder/unembed"))
        return [*first, *encoder, *chain([*blocks, head])]
