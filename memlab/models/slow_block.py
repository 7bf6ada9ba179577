"""The slow block: a parameter matrix, separate from the backbone, that is written at test time (R. Thomas' BDH
slow memory; the paper's code is not public, so this is the reconstruction of the research notes, section B.2,
marked inferred there).

At each slow layer a content address q_t = relu(W_a [x_t; c_t]), normalised to a sum of at most 1, reads the
memory M [m, D] (`memory`), and the read enters the residual through a gate that starts closed:

    r_t = q_t M (+ the fast read)          x_t <- LN(x_t + tanh(g) * r_t),   g = 0 at init

The address reads the residual x_t and its causal mean over the document so far, c_t = LN(mean_{s<=t} x_s): "a
learned content-addressing projection so the address reflects full causal context, not just token identity" (the
paper's words; the form is inferred). From x_t alone, the addresses of "Basik fears " and "Putmar owns a " at the
answer's first byte came out nearly equal in a trained BDH (cosine 0.997: the position's own bytes dominate it),
so no memory could tell the facts apart. With
`model.slow_hebbian` a per-sequence fast state at the same site adds F_{t-1}^T q_t, F_t = lambda F_{t-1} +
eta q_t x_t^T (read before write: strictly causal), through `pallas_kernels.linear_attention`. A write changes
M only; the memory to read can also be handed in per example ([B, m, D]), which is how writes and meta-TTT work
on it without touching the parameters.

The anchor: the paper's code is not public; the public fleeb83/bdh-fast-weights v0.3 @ ad05bdb holds the slow and
fast memories on a transformer backbone, and its read is what this block follows.

Deviations from the anchor:
- The address reads [x_t; c_t]; the anchor's relu(W x_t) reads x_t alone (not a knob: from x_t alone the facts'
  addresses were nearly equal, above).
- `model.slow_address`: "relu" (the anchor: relu, divided by its sum where above 1) | "softmax" (memlab's).
- The gate tanh(g) is per channel (g [D]); the anchor's is one scalar per layer. Not yet a knob.
- The norm after the gated read is BDH's LN without affine parameters; the anchor's backbone uses LayerNorm with
  scale and bias.
- `model.slow_hebbian`: off; the anchor runs its fast state whenever hebb_lr > 0 (its default 1e-3). The slow-weights
  claim studies the slow memory alone. `slow_hebbian_lr` 1e-3, `slow_hebbian_decay` 0.995, `slow_slots` 64 and
  M ~ N(0, 0.02) are the anchor's.
- Writes are gradient steps on M (memlab.slow_weights, the paper's test-time training); the anchor's consolidation
  (adding the mean fast state into M) is not built.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

import pallas_kernels
from memlab.models.layers import dense, layer_norm
from memlab.models.mixers.matrix_block import kernel_flops_per_token

HEBBIAN_CHUNK = 64
ADDRESSES = ("relu", "softmax")


def parse_slow_layers(spec: str, num_layers: int) -> tuple[int, ...]:
    """'' -> (); '1' or '1,3' -> the layer indices after whose pass a slow block sits (each in range, once)."""
    try:
        layers = tuple(int(s) for s in str(spec).split(",") if s.strip())
    except ValueError:
        raise ValueError(
            f"model.slow_layers={spec!r} must be '' or comma-separated layer indices, e.g. '1,3'"
        ) from None
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad or len(set(layers)) != len(layers):
        raise ValueError(
            f"model.slow_layers={spec!r}: each index once, in 0..{num_layers - 1} (model.num_layers={num_layers})"
        )
    return layers


def _stopped(block: nnx.Module):
    """The block's graph and its parameters behind stop_gradient."""
    graphdef, state = nnx.split(block)
    return graphdef, jax.tree.map(jax.lax.stop_gradient, state)


def causal_mean(x: jax.Array, positions: jax.Array) -> jax.Array:
    """LN of the mean of x [B, T, D] over each position's document so far: positions [B, T] count from 0 at each
    document's first token, so t - positions[t] is where it started (a prefix sum, no loop over tokens)."""
    sums = jnp.cumsum(x.astype(jnp.float32), axis=1)
    start = jnp.arange(x.shape[1])[None] - positions
    before = jnp.take_along_axis(sums, jnp.maximum(start - 1, 0)[..., None], axis=1)
    before = jnp.where((start > 0)[..., None], before, 0.0)
    return layer_norm((sums - before) / (positions + 1)[..., None].astype(jnp.float32))


class SlowBlock(nnx.Module):
    """Address `address` (D -> m), memory `memory` [m, D] (N(0, 0.02)) and per-channel gate `gate` (zeros)."""

    def __init__(self, cfg, *, rngs: nnx.Rngs, dtype=jnp.float32):
        d, m = cfg.d_model, cfg.slow_slots
        self.dtype = dtype
        self.address = dense(2 * d, m, ("embed", "slots"), rngs=rngs, dtype=dtype)
        self.memory = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (m, d)), out_sharding=("slots", "embed"))
        self.gate = nnx.Param(jnp.zeros((d,)), out_sharding=("embed",))
        self.softmax = cfg.get("slow_address", "relu") == "softmax"
        self.hebbian = bool(cfg.slow_hebbian)
        self.hebbian_lr, self.hebbian_decay = float(cfg.slow_hebbian_lr), float(cfg.slow_hebbian_decay)

    @staticmethod
    def check(cfg) -> None:
        if cfg.slow_address not in ADDRESSES:
            raise ValueError(f"model.slow_address={cfg.slow_address!r} must be one of {', '.join(ADDRESSES)}")
        if cfg.slow_slots < 1:
            raise ValueError(f"model.slow_slots must be >= 1, got {cfg.slow_slots}")
        if cfg.slow_hebbian and not (cfg.slow_hebbian_lr > 0 and 0 < cfg.slow_hebbian_decay <= 1):
            raise ValueError(
                "model.slow_hebbian needs model.slow_hebbian_lr > 0 and 0 < model.slow_hebbian_decay <= 1; got "
                f"{cfg.slow_hebbian_lr} and {cfg.slow_hebbian_decay}"
            )

    def addresses(self, x: jax.Array, context: jax.Array) -> jax.Array:
        """q [.., m] (fp32) from a = W_a [x; context]: relu(a) divided by its sum where that exceeds 1, or
        softmax(a) (`model.slow_address`)."""
        a = self.address(jnp.concatenate([x, context.astype(x.dtype)], -1)).astype(jnp.float32)
        if self.softmax:
            return jax.nn.softmax(a, axis=-1)
        q = jax.nn.relu(a)
        return q / jnp.maximum(1.0, q.sum(-1, keepdims=True))

    def address_of(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        """The addresses of the residuals x [B, T, D] of documents at `positions` (their causal mean's restarts)."""
        return self.addresses(x, causal_mean(x, positions))

    def read(self, q: jax.Array, memory: jax.Array | None = None) -> jax.Array:
        """q M for the block's own memory [m, D], or one memory per example [B, m, D]."""
        memory = self.memory[...] if memory is None else memory
        spec = "btm,md->btd" if memory.ndim == 2 else "btm,bmd->btd"
        return jnp.einsum(spec, q, memory.astype(jnp.float32))

    def _fast(self, q, x, segment_ids=None, state=None):
        """The Hebbian fast read F_{t-1}^T q_t over [B, T] (and the final state when `state` is given)."""
        g = jnp.full(q.shape[:2] + (1,), math.log(self.hebbian_decay), jnp.float32)
        v = (self.hebbian_lr * x.astype(jnp.float32))[:, :, None]
        kw = dict(
            g=g,
            scale=1.0,
            read_before_write=True,
            segment_ids=segment_ids,
            chunk_size=HEBBIAN_CHUNK,
            initial_state=state,
            return_final_state=state is not None,
            backend="reference" if state is not None else "auto",
        )
        return pallas_kernels.linear_attention(q[:, :, None], q[:, :, None], v, **kw)

    def _mix(self, x, r):
        return layer_norm(x + (jnp.tanh(self.gate[...]) * r).astype(x.dtype))

    def __call__(self, x, positions, *, memory=None, read=None, segment_ids=None, frozen=False) -> jax.Array:
        """x [B, T, D] after the block; `positions` [B, T] restart at 0 in each packed document (the causal mean
        restarts with them); `memory` replaces M ([B, m, D]), `read` replaces its read q M ([B, T, D]); `frozen`:
        no gradient reaches the block's parameters (gradients still flow through it to the residual)."""
        if frozen:
            return nnx.merge(*_stopped(self))(x, positions, memory=memory, read=read, segment_ids=segment_ids)
        q = self.address_of(x, positions)
        r = self.read(q, memory) if read is None else read.astype(jnp.float32)
        if self.hebbian:
            r = r + self._fast(q, x, segment_ids)[0][:, :, 0]
        return self._mix(x, r)

    def init_cache(self, batch_size: int) -> dict:
        """The running sum of the residuals (for the causal mean) and the fast state [B, 1, m, D] (fp32), if any."""
        m, d = self.memory.shape
        cache = {"sum": jnp.zeros((batch_size, 1, d), jnp.float32)}
        return {**cache, "fast": jnp.zeros((batch_size, 1, m, d), jnp.float32)} if self.hebbian else cache

    def step(self, x: jax.Array, cache: dict, position: jax.Array) -> tuple[jax.Array, dict]:
        """One token x [B, 1, D] at `position` -> (x after the block, cache): the same read, the causal mean's
        running sum and the fast state carried on."""
        total = cache["sum"] + x.astype(jnp.float32)
        q = self.addresses(x, layer_norm(total / (position + 1).astype(jnp.float32)))
        r = self.read(q)
        new = {"sum": total}
        if self.hebbian:
            o, new["fast"] = self._fast(q, x, state=cache["fast"])
            r = r + o[:, :, 0]
        return self._mix(x, r), new

    @staticmethod
    def state_size(cfg) -> int:
        """The causal mean's running sum (D) and the fast state (m x D), if any."""
        return cfg.d_model + (cfg.slow_slots * cfg.d_model if cfg.slow_hebbian else 0)

    @staticmethod
    def forward_flops_per_token(cfg, seq_len: int) -> float:
        """The address (2D m MACs) and the read (m D), plus the fast state's chunked linear attention."""
        d, m = cfg.d_model, cfg.slow_slots
        fast = kernel_flops_per_token(1, m, d, min(HEBBIAN_CHUNK, seq_len), delta=False) if cfg.slow_hebbian else 0.0
        return 2.0 * 3 * d * m + fast
