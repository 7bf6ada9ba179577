"""Decoder-only language model (`model.name = "lm"`): token embedding, pre-norm blocks (mixer + SwiGLU), final
norm, logits.

The sequence mixer of each layer comes from `model.mixers` through the mixer registry; decoding runs each
layer's mixer one token at a time through its own `init_cache` / `step`. The anchor: the Llama architecture,
as meta-llama/llama3's model.py @ a0940f9 builds it (pre-RMSNorm blocks, SwiGLU, RoPE, no biases, untied output).

Deviations from the anchor:
- SwiGLU hidden width `model.mlp_ratio` * d_model rounded up to 16 (4 d: the width of a GELU MLP at ratio 4); the
  anchor's is 2/3 of 4 d rounded up to 256 (the same parameters as a 4 d GELU MLP).
- RMSNorm eps 1e-6 (the anchor's ModelArgs: 1e-5). `model.rope_theta` 1e4 (the anchor's 5e5, for long contexts).
- No grouped key/value heads (the anchor's `n_kv_heads`); `model.tie_embeddings` False, as the anchor.
- Initialisation: memlab's (token embedding N(0, 1), projections truncated normal fan-in); the anchor's code
  leaves it to its checkpoints.
- The token mixer is any registered mixer (`model.mixers`), attention being the anchor's (mixers/attn.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from memlab.models import adapters
from memlab.models.layers import SwiGLU, check_heads, compute_dtype, dense, mlp_width, rms_norm, token_embedding
from memlab.models.mixers import MIXERS, parse_mixers
from memlab.models.mixers.matrix_block import MATRIX_READS
from memlab.models.stages import Stage, StagedFlops, chain
from memlab.parallel import constrain
from memlab.registry import MODELS

ACTIVATION = ("batch", "seq", "embed")  # logical names of the residual stream, constrained at block boundaries


class Block(nnx.Module):
    """Pre-norm block: x + mixer(norm(x)), then x + SwiGLU(norm(x)). `mixer` names a registered mixer, built here
    from the config, or is a mixer module built by the caller (one that needs more than the config, as the masked
    mixer of memory_model needs its sequence length)."""

    def __init__(self, cfg, mixer: str | nnx.Module, *, rngs: nnx.Rngs, dtype):
        self.mixer_norm = rms_norm(cfg.d_model, rngs=rngs, dtype=dtype)
        self.mixer = MIXERS.get(mixer)(cfg, rngs=rngs, dtype=dtype) if isinstance(mixer, str) else mixer
        self.mlp_norm = rms_norm(cfg.d_model, rngs=rngs, dtype=dtype)
        self.mlp = SwiGLU(cfg.d_model, mlp_width(cfg.d_model, cfg.mlp_ratio), rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array, *, positions: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
        x = x + self.mixer(self.mixer_norm(x), positions=positions, segment_ids=segment_ids)
        return x + self.mlp(self.mlp_norm(x))


@MODELS.register("lm")
class LM(StagedFlops, nnx.Module):
    """`model.name = "lm"`. Called on a batch dict with `inputs` [B, T] (and optional `segment_ids`)."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        self.check(cfg)
        self.cfg = cfg
        dtype = compute_dtype(cfg.dtype)
        self.mixer_names = parse_mixers(cfg.mixers, cfg.num_layers)
        self.embed = token_embedding(cfg.vocab_size, cfg.d_model, rngs=rngs, dtype=dtype)
        self.blocks = nnx.List([Block(cfg, name, rngs=rngs, dtype=dtype) for name in self.mixer_names])
        self.final_norm = rms_norm(cfg.d_model, rngs=rngs, dtype=dtype)
        if not cfg.tie_embeddings:
            self.unembed = dense(cfg.d_model, cfg.vocab_size, ("embed", "vocab"), rngs=rngs, dtype=dtype)

    @staticmethod
    def defaults() -> dict:
        """The family's `model.*` knobs with their defaults."""
        return {
            "mixers": "attn",  # one mixer for all layers, or a comma list with one per layer
            "d_model": 64,
            "num_layers": 2,
            "num_heads": 2,
            "mlp_ratio": 4.0,
            "rope_theta": 10_000.0,
            "qkv_conv": False,  # attn: short causal convolutions on queries, keys and values
            "copy_init": False,  # attn: start as a copying lookup (W_k = W_q, W_o = W_v^T; attention_projections)
            "attention_window": 0,  # attn: W > 0 limits every attn layer to windows of W tokens; 0 = unlimited
            "attention_window_kind": "sliding",  # attn: sliding (the last W tokens) | block (own block of W tokens)
            "conv_kernel": 4,  # taps of the short causal convolutions (conv mixer, conv paths of recurrent mixers)
            "tie_embeddings": False,
            # matrix-memory mixers (gdn, deltanet, hebbian): per-head [K, V] state, K = matrix_head_dim,
            # V = K * expand_v
            "matrix_head_dim": 0,  # key dim per head; 0 = d_model // num_heads
            "matrix_expand_v": 1.0,  # value dim / key dim (Gated DeltaNet uses 2)
            "matrix_chunk_size": 64,  # chunk length of the chunked / Pallas kernels (mlstm too)
            "matrix_backend": "auto",  # pallas_kernels backend: auto | reference | chunked | pallas (mlstm too)
            # when token t reads the memory: "after" its own write, o_t = S_t^T q_t (Gated DeltaNet), or "before",
            # o_t = S_{t-1}^T q_t (delta-mem, BDH fast weights, Titans); gdn, deltanet, hebbian (mlstm: "after" only)
            "matrix_read": "after",
            "hebbian_decay": False,  # hebbian: learned data-dependent decay alpha (gated linear attention)
            "mlstm_proj_factor": 2.0,  # mlstm: up-projection width / d_model (xLSTM uses 2); head dim = width / heads
            # test-time-training mixers (matrix_head_dim, matrix_chunk_size, matrix_backend apply; matrix_read does
            # not: they have their own read order). Defaults are the anchors' (ttt-lm-jax, titans-pytorch); the
            # other settings are memlab's earlier variants (each mixer's docstring lists them)
            "ttt_variant": "minibatch",  # ttt_linear: minibatch (LN, ttt_minibatch; the anchor) | delta (no LN)
            "ttt_base_lr": 1.0,  # ttt_linear: token learning rate eta = ttt_base_lr * sigmoid(w_lr . x + b_lr)
            "ttt_minibatch": 16,  # ttt_linear minibatch: tokens per inner mini-batch
            "ttt_inputs": "shared_qk",  # ttt_linear: shared_qk (one q/k projection, two convs) | matrix (q/k/v convs)
            "ttt_post_norm": "layer",  # ttt_linear: layer (LayerNorm over the width) | rms_head (per-head RMSNorm)
            "ttt_lr_bias": True,  # ttt_linear: the learning-rate gate's projection has a bias
            "titans_momentum": True,  # titans: momentum S = eta S - theta grad on the memory update
            "titans_depth": 2,  # titans: 2 = MLP memory (hidden 4 K) | 1 = linear memory
            "titans_max_lr": 1.0,  # titans: step theta = titans_max_lr * sigmoid(w . x + b)
            "titans_read": "after",  # titans: token t reads M_t (after its write) | before: M_{t-1}
            "titans_loss": "mean",  # titans: inner loss mean over features | half_sum: 1/2 ||M(k) - v||^2
            "titans_grad_batch": 0,  # titans: 0 = every gradient at M_0 | b = at the memory after each b tokens
            "titans_residual": "norm",  # titans: x + LN(MLP(x)) (gamma + 1) | plain: x + MLP(x) | none: MLP(x)
            "titans_gelu": "exact",  # titans depth 2: exact | tanh GELU
            "titans_block": "anchor",  # titans: anchor (pre-RMSNorm, retrieve gate) | matrix (MatrixMixer's block)
            "titans_init": "xavier_shared",  # titans M_0: xavier_shared (one for all heads) | normal (per head)
            "titans_forget_bias": 0.0,  # titans: alpha's bias at the start (alpha = sigmoid(.); earlier -4)
            # adapters on every attn layer (memlab.models.adapters), to train on a frozen backbone:
            # delta-mem online memory, "" = off | tsw (writes every token) | ssw (one write per block window of
            # attention_window tokens, from its mean hidden state; needs attention_window_kind=block) | msw (tsw
            # with 4 state heads); state per layer n_s x rank x rank, through the delta_rule kernel
            # (matrix_backend, matrix_chunk_size)
            "delta_mem": "",
            "delta_mem_rank": 8,  # r: state rows and columns per state head
            "delta_mem_alpha": 16.0,  # Delta q and Delta o are scaled by alpha / r
            "delta_mem_update": "standard",  # standard (erase beta) | lambda_outside (erase lambda beta: gated delta)
            "delta_mem_init": "base_slice",  # W_dq, W_do: base_slice (0.05 x normalised q/o kernel rows) | zero
            "delta_mem_beta_bias": -1.5,  # b_beta's init: beta_0 = sigmoid(b); the anchor's -1.5 forgets 18% a token
            "delta_mem_read": "state",  # state | zero: the ablation that writes as usual and reads nothing
            "lora_rank": 0,  # LoRA of rank r on the q and o projections (0 = off): the adapter-capacity control
            "lora_alpha": 16.0,  # LoRA scale alpha / r
        }

    @staticmethod
    def check(cfg) -> None:
        """ValueError for a mixer list that does not fit the layers, an unknown mixer, knobs a mixer cannot run
        with, heads RoPE cannot rotate, an unknown `model.matrix_read`, or adapter knobs (adapters.check)."""
        names = parse_mixers(cfg.mixers, cfg.num_layers)
        unknown = sorted({n for n in names if n not in MIXERS})
        if unknown:
            raise ValueError(
                f"model.mixers={cfg.mixers!r}: unknown mixer(s) {unknown}; "
                f"registered mixers: {', '.join(MIXERS.names())}"
            )
        for name in dict.fromkeys(names):
            mixer_check = getattr(MIXERS.get(name), "check", None)
            if mixer_check is not None:
                mixer_check(cfg)
        check_heads(cfg)
        if cfg.get("matrix_read", "after") not in MATRIX_READS:
            raise ValueError(f"model.matrix_read={cfg.matrix_read!r} must be one of {', '.join(MATRIX_READS)}")
        if not isinstance(cfg.get("copy_init", False), bool):
            raise ValueError(f"model.copy_init={cfg.copy_init!r} must be True or False")
        adapters.check(cfg)

    def __call__(self, batch: dict) -> dict:
        tokens = batch["inputs"]
        segment_ids = batch.get("segment_ids")
        positions = batch.get("positions")
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        x = constrain(self.embed(tokens), ACTIVATION)
        for block in self.blocks:
            x = constrain(block(x, positions=positions, segment_ids=segment_ids), ACTIVATION)
        out = {"logits": constrain(self.head(x), ("batch", "seq", "vocab"))}
        betas = jax.tree.leaves(nnx.pop(self, nnx.Intermediate))  # δ-mem layers' mean write strength
        if betas:
            out["delta_mem_beta"] = jnp.mean(jnp.stack(betas))
        return out

    def head(self, x: jax.Array) -> jax.Array:
        """fp32 logits of residual states x [..., d]: the final norm, then the (tied or own) output projection."""
        x = self.final_norm(x)
        logits = self.embed.attend(x) if self.cfg.tie_embeddings else self.unembed(x)
        return logits.astype(jnp.float32)

    def init_cache(self, batch_size: int, max_len: int) -> dict:
        """Decoding cache for up to `max_len` tokens: one entry per layer plus the next position."""
        return {
            "pos": jnp.zeros((), jnp.int32),
            "layers": [b.mixer.init_cache(batch_size, max_len) for b in self.blocks],
        }

    def decode_step(self, tokens: jax.Array, cache: dict) -> tuple[jax.Array, dict]:
        """One token per sequence, tokens [B] -> (fp32 logits [B, vocab], cache); equals the parallel forward."""
        x = self.embed(tokens)
        layers = []
        for block, layer_cache in zip(self.blocks, cache["layers"], strict=True):
            y, layer_cache = block.mixer.step(block.mixer_norm(x), layer_cache, position=cache["pos"])
            x = x + y
            x = x + block.mlp(block.mlp_norm(x))
            layers.append(layer_cache)
        return self.head(x), {"pos": cache["pos"] + 1, "layers": layers}

    def generate(self, prompt: jax.Array, num_tokens: int) -> jax.Array:
        """Greedy continuation of `prompt` [B, P] by `num_tokens` tokens through the one-token step (O(1) state
        per token for matrix mixers, a KV cache for attention) -> [B, P + num_tokens]."""
        step = nnx.jit(type(self).decode_step)
        cache = self.init_cache(prompt.shape[0], prompt.shape[1] + num_tokens)
        tokens = [prompt[:, t] for t in range(prompt.shape[1])]
        for t in range(prompt.shape[1] + num_tokens - 1):
            logits, cache = step(self, tokens[t], cache)
            if t + 1 >= prompt.shape[1]:
                tokens.append(jnp.argmax(logits, axis=-1).astype(prompt.dtype))
        return jnp.stack(tokens, axis=1)

    def init_adapters_from_backbone(self) -> None:
        """Recompute adapter inits that derive from the backbone (δ-mem's base slices) from the current backbone
        parameters: memlab.train.loop calls it after `train.init_from` has loaded them."""
        for block in self.blocks:
            if hasattr(block.mixer, "init_adapters_from_backbone"):
                block.mixer.init_adapters_from_backbone()

    def state_size(self, seq_len: int) -> int:
        """Numbers one sequence carries when decoding after seq_len tokens, summed over the layers' mixers."""
        return sum(MIXERS.get(name).state_size(self.cfg, seq_len) for name in self.mixer_names)

    def embedding_params(self) -> int:
        """Parameters in the token embedding and (untied) unembedding: excluded from `params_non_embedding`."""
        per_table = self.cfg.vocab_size * self.cfg.d_model
        return per_table if self.cfg.tie_embeddings else 2 * per_table

    def flop_stages(self, shapes: dict) -> list[Stage]:
        """Analytic forward FLOPs of one example by stage (2 FLOPs per multiply-accumulate of every matmul): the
        embedding lookup, each layer's mixer and MLP, the logits (see memlab.models.stages)."""
        cfg, seq_len = self.cfg, shapes["inputs"][-1]
        stages = [Stage("embed", 0.0, ("embed",)), *block_stages(cfg, self.mixer_names, seq_len)]
        head = ("final_norm", "embed" if cfg.tie_embeddings else "unembed")
        stages.append(Stage("head", 2.0 * cfg.d_model * cfg.vocab_size * seq_len, head))
        return chain(stages)


def block_stages(cfg, mixers: list, seq_len: int, prefix: str = "", rows: int = 1) -> list[Stage]:
    """The FLOP stages of a stack of `Block`s (parameters under `{prefix}blocks/i/`), a mixer and an MLP stage per
    layer, run on `rows` sequences of `seq_len` tokens per example; not yet chained. `mixers` holds a registered
    mixer name or a mixer class (one Block was handed built) per layer."""
    d_ff = mlp_width(cfg.d_model, cfg.mlp_ratio)
    stages = []
    for i, name in enumerate(mixers):
        at = f"{prefix}blocks/{i}"
        cls = MIXERS.get(name) if isinstance(name, str) else name
        mixer = cls.forward_flops_per_token(cfg, seq_len) * seq_len * rows
        stages.append(Stage(f"{at}/mixer", mixer, (f"{at}/mixer_norm", f"{at}/mixer")))
        mlp = SwiGLU.forward_flops_per_token(cfg.d_model, d_ff) * seq_len * rows
        stages.append(Stage(f"{at}/mlp", mlp, (f"{at}/mlp_norm", f"{at}/mlp")))
    return stages
