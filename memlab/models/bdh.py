"""BDH, the "Dragon Hatchling" (`model.name = "bdh"`; Kosowski et al. 2025, pathwaycom/bdh @ 714bc80), with an
optional slow block written at test time (memlab.models.slow_block; R. Thomas' slow-weight memory).

One set of weights is shared by all `model.num_layers` layer passes. Each head h maps the residual x [T, D] to
N = `neuron_multiplier` * D / heads sparse, non-negative neurons, attends with them linearly, and writes back:

    x = LN(embed(tokens))
    repeat num_layers times (same E, E_v, Dec):
        xs_h = relu(x E_h)                                 [T, N]
        a_h  = LN( tril(R(xs_h) R(xs_h)^T, -1) x )         no softmax, no 1/sqrt(N): strictly earlier tokens only
        ys_h = relu(a_h E_v,h)
        y    = LN( concat_h(xs_h * ys_h) Dec )
        x    = LN(x + y)                                   then the slow block, after the layers it sits at
    logits = x W_lm

LN has no affine parameters; R is RoPE on the neuron vector (pairs (2i, 2i+1) at angle t * theta^(-2i/N)). The
attention is linear attention with a Hebbian state S_t = sum_{s<=t} R(xs_s) x_s^T [N, D] read before its write, so
training runs the masked quadratic form (cheaper for T <= N) and decoding runs `pallas_kernels.linear_attention`
on that state, one token at a time.

With `model.slow_layers`, `logits` also takes slow memories from outside (`slow={layer: [B, m, D]}`), which is
how a write (memlab.slow_weights) and meta-test-time training change them without touching the parameters; a
batch with `doc_inputs` (the `episode` pass) is a meta-TTT episode, see `_episode`.

Deviations from the anchor:
- Dropout: the anchor's 0.1 on the sparse product is not built; memlab trains without dropout.
- Sizes: the knobs' defaults are CPU-sized (d_model 64, 2 heads, neuron_multiplier 16, 4 layer passes); the
  anchor's are 256, 4, 128, 6 (`model.d_model`, `model.num_heads`, `model.neuron_multiplier`, `model.num_layers`).
- The token embedding starts N(0, 1) (memlab's, as every family's); the anchor's _init_weights draws N(0, 0.02).
  The LN right after it makes the forward the same at the start; Adam's steps are relatively smaller. Not yet a knob.
- Decoding runs the Hebbian state (`pallas_kernels.linear_attention`) where the anchor's `generate` reruns the
  whole prefix: the same numbers, O(1) per token.
- The slow block and meta-TTT (`model.slow_layers`, `model.meta_inner_steps`) are memlab's additions: off by default.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import pallas_kernels
from memlab.models.layers import compute_dtype, dense, layer_norm, token_embedding
from memlab.models.lm import LM
from memlab.models.slow_block import SlowBlock, parse_slow_layers
from memlab.models.stages import Stage, StagedFlops, chain
from memlab.parallel import constrain
from memlab.registry import MODELS

ACTIVATION = ("batch", "seq", "embed")
NORMAL = nnx.initializers.normal(0.02)  # every BDH weight starts N(0, 0.02), as the anchor's _init_weights


def neuron_rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """BDH's RoPE on the neuron axis of x [B, H, T, N] at positions [B, T]: pair (2i, 2i+1) turns by
    t * theta^(-2i/N), the phase reduced mod 1 turn before the angle is formed (as the anchor, for precision)."""
    n = x.shape[-1]
    freq = theta ** (-2.0 * jnp.arange(n // 2, dtype=jnp.float32) / n) / (2 * math.pi)  # turns per position
    turns = jnp.mod(positions[:, None, :, None].astype(jnp.float32) * freq, 1.0)
    angle = jnp.repeat(turns * 2 * math.pi, 2, axis=-1)  # [B, 1, T, N]
    x32 = x.astype(jnp.float32)
    pairs = x32.reshape(*x.shape[:-1], n // 2, 2)
    rotated = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
    return (x32 * jnp.cos(angle) + rotated * jnp.sin(angle)).astype(x.dtype)


def neurons(cfg) -> int:
    """N, the neurons per head: neuron_multiplier * d_model / num_heads (the anchor's mlp_internal_dim)."""
    return cfg.neuron_multiplier * cfg.d_model // cfg.num_heads


@MODELS.register("bdh")
class BDH(StagedFlops, nnx.Module):
    """`model.name = "bdh"`. Called on a batch dict with `inputs` [B, T] (optional `segment_ids`, `positions`)."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        self.check(cfg)
        self.cfg = cfg
        self.dtype = compute_dtype(cfg.dtype)
        d, h, n = cfg.d_model, cfg.num_heads, neurons(cfg)
        self.embed = token_embedding(cfg.vocab_size, d, rngs=rngs, dtype=self.dtype)
        self.encoder = nnx.Param(NORMAL(rngs.params(), (h, d, n)), out_sharding=(None, "embed", "mlp"))
        self.encoder_v = nnx.Param(NORMAL(rngs.params(), (h, d, n)), out_sharding=(None, "embed", "mlp"))
        self.decoder = nnx.Param(NORMAL(rngs.params(), (h * n, d)), out_sharding=("mlp", "embed"))
        self.unembed = dense(d, cfg.vocab_size, ("embed", "vocab"), rngs=rngs, dtype=self.dtype, init=NORMAL)
        self.slow_layers = parse_slow_layers(cfg.slow_layers, cfg.num_layers)
        self.slow = nnx.Dict({str(i): SlowBlock(cfg, rngs=rngs, dtype=self.dtype) for i in self.slow_layers})
        if cfg.meta_inner_steps:  # meta-TTT's inner learning rate, learned from its configured start
            self.inner_log_lr = nnx.Param(jnp.log(jnp.asarray(cfg.meta_inner_lr, jnp.float32)))

    @staticmethod
    def defaults() -> dict:
        """The family's `model.*` knobs: a CPU-sized BDH (the anchor's is d 256, 4 heads, multiplier 128, 6
        layers: 25.3M parameters)."""
        return {
            "d_model": 64,
            "num_heads": 2,
            "num_layers": 4,  # layer passes, all with the same weights
            "neuron_multiplier": 16,  # N = multiplier * d_model / num_heads neurons per head
            "rope_theta": 65536.0,  # 2^16, the anchor's
            # slow block (memlab.models.slow_block): "" = none, or layer indices "1" / "1,3" after whose pass a
            # content-addressed m x D memory is read into the residual through a gate that starts closed
            "slow_layers": "",
            "slow_slots": 64,  # m
            # the address's nonlinearity: relu, divided by its sum where above 1 (bdh-fast-weights v0.3), or softmax
            # over the slots (every slot keeps a gradient: relu addresses collapsed onto one always-on slot)
            "slow_address": "relu",
            "slow_hebbian": False,  # a per-sequence Hebbian fast state at the same site (read before write)
            "slow_hebbian_lr": 1e-3,  # its write rate eta
            "slow_hebbian_decay": 0.995,  # its per-token decay lambda
            # meta-test-time training on `episode` passes: inner SGD steps on the slow memories per episode,
            # from their learned initial values; 0 = episodes are not run
            "meta_inner_steps": 0,
            "meta_inner_lr": 1.0,  # the inner step size's initial value (learned in log space)
            "meta_second_order": False,  # differentiate through the inner gradients (default: first order)
            # whether text (not episodes) trains the slow block: off, the block learns from episodes alone (on text
            # it reads, but passes no gradient to its parameters); on, as any other weights
            "slow_text_gradient": True,
        }

    @staticmethod
    def check(cfg) -> None:
        """ValueError for a neuron count RoPE cannot rotate, slow layers out of range, or meta-TTT knobs that do
        not fit."""
        if cfg.d_model < 2 or cfg.num_heads < 1 or cfg.num_layers < 1 or cfg.neuron_multiplier < 1:
            raise ValueError(
                "model.d_model >= 2, model.num_heads >= 1, model.num_layers >= 1 and model.neuron_multiplier >= 1 "
                f"are required; got {cfg.d_model}, {cfg.num_heads}, {cfg.num_layers}, {cfg.neuron_multiplier}"
            )
        n = cfg.neuron_multiplier * cfg.d_model
        if n % cfg.num_heads or (n // cfg.num_heads) % 2:
            raise ValueError(
                f"model.neuron_multiplier * model.d_model = {n} must split into model.num_heads={cfg.num_heads} "
                "heads of an even number of neurons (RoPE turns pairs)"
            )
        slow = parse_slow_layers(cfg.slow_layers, cfg.num_layers)
        SlowBlock.check(cfg)
        if cfg.meta_inner_steps < 0 or (cfg.meta_inner_steps and not slow):
            raise ValueError(
                f"model.meta_inner_steps={cfg.meta_inner_steps} must be >= 0, and > 0 only with model.slow_layers "
                "(the inner loop writes the slow memories)"
            )
        if not cfg.meta_inner_lr > 0:
            raise ValueError(f"model.meta_inner_lr must be > 0, got {cfg.meta_inner_lr}")

    def __call__(self, batch: dict) -> dict:
        if "doc_inputs" in batch:
            return self._episode(batch)
        return {"logits": self.logits(batch["inputs"], batch.get("positions"), batch.get("segment_ids"), text=True)}

    def logits(self, tokens, positions=None, segment_ids=None, slow=None, reads=None, text=False) -> jax.Array:
        """fp32 logits [B, T, V] of tokens [B, T]. By slow layer i, `slow` replaces the memory ({i: [B, m, D]})
        and `reads` replaces the memory's read itself ({i: [B, T, D]}, the delta write's target search). `text`:
        the training forward on text, where `model.slow_text_gradient` decides whether the slow block learns."""
        x = self.residual(tokens, positions, segment_ids, slow=slow, reads=reads, text=text)
        return constrain(self.unembed(x).astype(jnp.float32), ("batch", "seq", "vocab"))

    def residual(self, tokens, positions=None, segment_ids=None, *, slow=None, reads=None, stop=None, text=False):
        """The residual stream after the last layer pass, or, with `stop=i`, the input of slow layer i's block."""
        frozen = text and not self.cfg.get("slow_text_gradient", True)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        slow, reads = slow or {}, reads or {}
        x = constrain(layer_norm(self.embed(tokens)), ACTIVATION)
        for i in range(self.cfg.num_layers):
            x = constrain(self._layer(x, positions, segment_ids), ACTIVATION)
            if i == stop:
                return x
            if i in self.slow_layers:
                block = self.slow[str(i)]
                x = block(x, positions, memory=slow.get(i), read=reads.get(i), segment_ids=segment_ids, frozen=frozen)
        return x

    def slow_addresses(self, tokens: jax.Array, layer: int) -> jax.Array:
        """The addresses q [B, T, m] slow layer `layer` computes on tokens [B, T] (one document per row)."""
        x = self.residual(tokens, stop=layer)
        return self.slow[str(layer)].address_of(x, jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape[:2]))

    def _sparse(self, x: jax.Array, weight: nnx.Param) -> jax.Array:
        """relu(x W_h) per head: x [B, T, D] (or [B, H, T, D]) -> [B, H, T, N]."""
        spec = "btd,hdn->bhtn" if x.ndim == 3 else "bhtd,hdn->bhtn"
        return jax.nn.relu(jnp.einsum(spec, x, weight[...].astype(self.dtype)))

    def _layer(self, x: jax.Array, positions: jax.Array, segment_ids: jax.Array | None) -> jax.Array:
        """One BDH layer pass in the masked form (scores in fp32: they grow with T, only the LN after holds them)."""
        t = x.shape[1]
        xs = self._sparse(x, self.encoder)
        r = neuron_rope(xs, positions, self.cfg.rope_theta).astype(jnp.float32)
        scores = jnp.einsum("bhtn,bhsn->bhts", r, r)
        mask = jnp.tril(jnp.ones((t, t), bool), -1)[None, None]
        if segment_ids is not None:
            mask = mask & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
        a = layer_norm(jnp.einsum("bhts,bsd->bhtd", jnp.where(mask, scores, 0.0), x.astype(jnp.float32)))
        return self._write_back(x, xs, a.astype(self.dtype))

    def _write_back(self, x: jax.Array, xs: jax.Array, a: jax.Array) -> jax.Array:
        """x = LN(x + LN(concat_h(xs * relu(a E_v)) Dec)) from the layer's neurons xs and attention read a."""
        z = xs * self._sparse(a, self.encoder_v)  # [B, H, T, N]
        h, n = z.shape[1], z.shape[-1]
        dec = self.decoder[...].astype(self.dtype).reshape(h, n, -1)
        return layer_norm(x + layer_norm(jnp.einsum("bhtn,hnd->btd", z, dec)))

    # ---- meta-test-time training -------------------------------------------------------------------------------

    def _episode(self, batch: dict) -> dict:
        """A meta-TTT episode: `doc_inputs`/`doc_targets`/`doc_mask` [B, F, Ld] (a document of F fact lines) and
        probes `inputs` [B, F, Lp]. Each episode's slow memories start at their learned values and take
        `meta_inner_steps` SGD steps on the document's next-token loss (per episode: each example's memories get
        only its own document's gradient); the probes are then read with the written memories and without the
        document in context. Returns the probes' logits [B, F, Lp, V]."""
        cfg = self.cfg
        if not cfg.meta_inner_steps:
            raise ValueError("an episode pass needs a BDH with model.meta_inner_steps > 0 and model.slow_layers")
        b, f = batch["inputs"].shape[:2]
        memories = {
            i: jnp.broadcast_to(self.slow[str(i)].memory[...], (b, *self.slow[str(i)].memory.shape))
            for i in self.slow_layers
        }
        docs = jax.tree.map(lambda a: a.reshape(b * f, -1), (batch["doc_inputs"], batch["doc_targets"]))
        doc_mask = batch["doc_mask"].astype(jnp.float32)

        def doc_loss(mems):
            logits = self.logits(docs[0], slow=_per_row(mems, f))
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, docs[1]).reshape(doc_mask.shape)
            per_episode = (ce * doc_mask).sum((1, 2)) / jnp.maximum(doc_mask.sum((1, 2)), 1.0)
            return per_episode.sum()  # episodes are independent: each memory's gradient is its own episode's

        lr = jnp.exp(self.inner_log_lr[...])
        for _ in range(cfg.meta_inner_steps):
            grads = jax.grad(doc_loss)(memories)
            if not cfg.meta_second_order:
                grads = jax.lax.stop_gradient(grads)
            memories = {i: memories[i] - lr * grads[i] for i in memories}
        probes = batch["inputs"].reshape(b * f, -1)
        logits = self.logits(probes, slow=_per_row(memories, f))
        return {"logits": logits.reshape(b, f, *logits.shape[1:])}

    # ---- decoding ----------------------------------------------------------------------------------------------

    def init_cache(self, batch_size: int, max_len: int) -> dict:
        """O(1) decoding state: each layer pass's Hebbian attention state [B, H, N, D] (fp32), the slow blocks'
        fast states, and the next position."""
        h, n, d = self.cfg.num_heads, neurons(self.cfg), self.cfg.d_model
        return {
            "pos": jnp.zeros((), jnp.int32),
            "layers": [jnp.zeros((batch_size, h, n, d), jnp.float32) for _ in range(self.cfg.num_layers)],
            "slow": {str(i): self.slow[str(i)].init_cache(batch_size) for i in self.slow_layers},
        }

    def decode_step(self, tokens: jax.Array, cache: dict) -> tuple[jax.Array, dict]:
        """One token per sequence, tokens [B] -> (fp32 logits [B, V], cache); equals the masked forward. Token t's
        attention reads the state before its own write (`linear_attention(read_before_write=True)`)."""
        x = layer_norm(self.embed(tokens))[:, None]  # [B, 1, D]
        positions = jnp.broadcast_to(cache["pos"], (x.shape[0], 1))
        layers, fast = [], {}
        for i, state in enumerate(cache["layers"]):
            xs = self._sparse(x, self.encoder)  # [B, H, 1, N]
            r = neuron_rope(xs, positions, self.cfg.rope_theta).astype(jnp.float32).transpose(0, 2, 1, 3)
            v = jnp.broadcast_to(x.astype(jnp.float32)[:, :, None], (*r.shape[:3], x.shape[-1]))
            o, state = pallas_kernels.linear_attention(
                r,
                r,
                v,
                scale=1.0,
                initial_state=state,
                return_final_state=True,
                read_before_write=True,
                backend="reference",
            )
            a = layer_norm(o.transpose(0, 2, 1, 3)).astype(self.dtype)  # [B, H, 1, D]
            x = self._write_back(x, xs, a)
            layers.append(state)
            if i in self.slow_layers:
                x, fast[str(i)] = self.slow[str(i)].step(x, cache["slow"][str(i)], cache["pos"])
        return self.unembed(x[:, 0]).astype(jnp.float32), {"pos": cache["pos"] + 1, "layers": layers, "slow": fast}

    def state_size(self, seq_len: int) -> int:
        """Numbers one sequence carries when decoding: each layer pass's H x N x D state (plus fast states)."""
        cfg = self.cfg
        fast = len(self.slow_layers) * SlowBlock.state_size(cfg)
        return cfg.num_layers * cfg.num_heads * neurons(cfg) * cfg.d_model + fast

    generate = LM.generate  # greedy continuation through decode_step, as the LM's

    # ---- accounting --------------------------------------------------------------------------------------------

    def embedding_params(self) -> int:
        return 2 * self.cfg.vocab_size * self.cfg.d_model

    def layer_flops_per_token(self, seq_len: int) -> float:
        """Forward FLOPs per token of one layer pass in the masked form: x E, a E_v and z Dec (each H N D MACs),
        the full T x T score matrix over N neurons and its product with the D-dim values (counted dense, as XLA
        computes them)."""
        cfg = self.cfg
        h, n, d = cfg.num_heads, neurons(cfg), cfg.d_model
        return 2.0 * (3 * h * n * d + h * seq_len * n + h * seq_len * d)

    def _forward_stages(self, seq_len: int, rows: int, tag: str = "") -> list[Stage]:
        """Chained stages of the forward on `rows` sequences of `seq_len` tokens (names prefixed by `tag`)."""
        cfg, shared = self.cfg, ("encoder", "encoder_v", "decoder")
        stages = [Stage(f"{tag}embed", 0.0, ("embed", "inner_log_lr"))]
        for i in range(cfg.num_layers):
            stages.append(Stage(f"{tag}layer/{i}", self.layer_flops_per_token(seq_len) * seq_len * rows, shared))
            if i in self.slow_layers:
                slow = SlowBlock.forward_flops_per_token(cfg, seq_len) * seq_len * rows
                stages.append(Stage(f"{tag}slow/{i}", slow, (f"slow/{i}",)))
        stages.append(Stage(f"{tag}head", 2.0 * cfg.d_model * cfg.vocab_size * seq_len * rows, ("unembed",)))
        return chain(stages)

    def flop_stages(self, shapes: dict) -> list[Stage]:
        """Analytic forward FLOPs of one example by stage (see memlab.models.stages). An episode (`doc_inputs`
        [F, Ld], probes [F, Lp]) adds its inner steps: each a forward over the document rows plus the activation
        backward from the logits down to the first slow layer. First order, no outer gradient flows through them
        (counted once); second order, they are differentiated like the rest."""
        if "doc_inputs" not in shapes:
            return self._forward_stages(shapes["inputs"][-1], 1)
        (f, doc_len), probe_len = shapes["doc_inputs"], shapes["inputs"][-1]
        doc = self._forward_stages(doc_len, f)
        below = ("embed", *(f"layer/{i}" for i in range(min(self.slow_layers))))  # no gradient to the memories
        inner_step = sum(s.flops for s in doc) + sum(s.flops for s in doc if s.name not in below)
        backbone = ("encoder", "encoder_v", "decoder", "unembed", "slow") if self.cfg.meta_second_order else ()
        inner = Stage("inner", inner_step * self.cfg.meta_inner_steps, backbone)
        return [inner, *self._forward_stages(probe_len, f, tag="probe/")]


def _per_row(memories: dict, repeat: int) -> dict:
    """Per-example memories {i: [B, m, D]} -> per-row {i: [B * repeat, m, D]} (each example's F rows share its)."""
    return {i: jnp.repeat(m, repeat, axis=0) for i, m in memories.items()}
