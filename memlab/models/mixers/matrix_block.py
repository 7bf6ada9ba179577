"""The block the matrix-memory mixers share: a per-head [K, V] state written token by token through pallas_kernels.

`gdn` (Gated DeltaNet: decay alpha and delta write beta), `deltanet` (delta write, no decay) and `hebbian`
(outer-product write, linear attention, optional decay), each in its own module, subclass `MatrixMixer` so that
they differ only in the write rule: q/k/v projections -> short causal conv + SiLU -> L2-normalised q, k -> kernel
-> per-head RMSNorm(o) * SiLU(W_g x) -> output projection. `model.matrix_read` sets when token t reads the state:
"after" its own write (o_t = S_t^T q_t, as Gated DeltaNet) or "before" it (o_t = S_{t-1}^T q_t, as delta-mem, BDH
fast weights and Titans), in the parallel forward and in the one-token `step`, which runs on an O(1) cache
(conv taps + state). `head_dims`, `map_head_blocks` and `kernel_flops_per_token` also serve the mlstm mixer.

The block is fla-org/flash-linear-attention's `GatedDeltaNet` layer (read at bc3b101). Where memlab's differs, for
every mixer built on it (their modules list these with their own):
- The short convs have a (zero-initialised) bias; the anchor's `conv_bias=False`. Not yet a knob.
- RMSNorm eps 1e-6 (the anchor: 1e-5); projections use memlab's initialisation (truncated normal, fan-in).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

import pallas_kernels
from memlab.models.layers import ShortConv, dense, rms_norm
from memlab.parallel import map_shards

MATRIX_READS = ("after", "before")  # model.matrix_read: o_t from S_t (after token t's write) or from S_{t-1}


def head_dims(cfg) -> tuple[int, int, int]:
    """(heads H, key dim K, value dim V): K = model.matrix_head_dim (0: d_model // heads), V = K * expand_v."""
    h = cfg.num_heads
    k = cfg.matrix_head_dim or cfg.d_model // h
    return h, k, int(k * cfg.matrix_expand_v)


def l2norm(x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.sum(x32 * x32, axis=-1, keepdims=True) + 1e-6)).astype(x.dtype)


def _inv_softplus(y: jax.Array) -> jax.Array:
    return y + jnp.log(-jnp.expm1(-y))


def map_head_blocks(kernel: Callable[..., jax.Array], *arrays: jax.Array | None) -> jax.Array:
    """`kernel(*arrays)` run on each (batch, heads) block of the mesh (see `map_shards`) -> its [B, T, H, V] output.

    Arrays are [B, T, H, ...] (q, k, v; trailing dims whole), [B, T, H] (gates) or [B, T] (segment ids); None
    passes through as None.
    """
    layout = ("batch", "seq", "heads") + (None,) * max(a.ndim - 3 for a in arrays if a is not None)
    present = [a for a in arrays if a is not None]

    def call(*blocks):
        it = iter(blocks)
        return kernel(*(None if a is None else next(it) for a in arrays))

    return map_shards(call, present, [layout[: a.ndim] for a in present], layout[:4])


def kernel_flops_per_token(h: int, k: int, v: int, chunk: int, delta: bool) -> float:
    """Forward FLOPs per token of the chunked (WY/UT) kernel for H heads with chunk length C.

    Per head and token: state read, state write (and, delta rule, the W S0 correction) cost K*V MACs each;
    intra-chunk scores Q K^T and the weighted sum over the chunk cost C*K and C*V; the delta rule adds the
    K K^T Gram matrix, W = T K and Ubar = T V (C*K + C*K + C*V) and the inverse T = (I + A)^-1 (~C^2/3).
    """
    macs = 2 * k * v + chunk * k + chunk * v
    if delta:
        macs += k * v + 2 * chunk * k + chunk * v + chunk * chunk / 3
    return 2.0 * h * macs


class MatrixMixer(nnx.Module):
    """Shared block; subclasses set `delta` (error-correcting write) and `decay` (data-dependent alpha)."""

    delta = True
    decay = True
    beta_bias = False  # whether beta's projection has a bias

    def __init__(self, cfg, *, rngs: nnx.Rngs, dtype=jnp.float32):
        d = cfg.d_model
        h, k, v = head_dims(cfg)
        self.heads, self.dk, self.dv, self.dtype = h, k, v, dtype
        self.backend, self.chunk_size = cfg.matrix_backend, cfg.matrix_chunk_size
        self.read_before_write = cfg.get("matrix_read", "after") == "before"  # older configs: "after"
        self._init_inputs(cfg, rngs, dtype)
        if self.delta:
            self.b = dense(d, h, ("embed", "heads"), rngs=rngs, dtype=dtype, use_bias=self.beta_bias)
        if self.decay:  # Mamba-2 / Gated DeltaNet parametrisation and initialisation of alpha
            self.a = dense(d, h, ("embed", "heads"), rngs=rngs, dtype=dtype)
            A = jax.random.uniform(rngs.params(), (h,), minval=1.0, maxval=16.0)
            self.A_log = nnx.Param(jnp.log(A), out_sharding=("heads",))
            log_dt = jax.random.uniform(rngs.params(), (h,), minval=math.log(1e-3), maxval=math.log(1e-1))
            dt = jnp.maximum(jnp.exp(log_dt), 1e-4)
            self.dt_bias = nnx.Param(_inv_softplus(dt), out_sharding=("heads",))
        self._init_output(cfg, rngs, dtype)

    def _init_inputs(self, cfg, rngs, dtype) -> None:
        """q, k, v projections, each with its short causal conv."""
        d, h, k, v = cfg.d_model, self.heads, self.dk, self.dv
        self.q = dense(d, h * k, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.k = dense(d, h * k, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.v = dense(d, h * v, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.q_conv = ShortConv(h * k, cfg.conv_kernel, rngs=rngs, dtype=dtype)
        self.k_conv = ShortConv(h * k, cfg.conv_kernel, rngs=rngs, dtype=dtype)
        self.v_conv = ShortConv(h * v, cfg.conv_kernel, rngs=rngs, dtype=dtype)

    def _init_output(self, cfg, rngs, dtype) -> None:
        """Per-head RMSNorm, the SiLU output gate and the output projection."""
        d, h, v = cfg.d_model, self.heads, self.dv
        self.o_norm = rms_norm(v, rngs=rngs, dtype=dtype, axis_name=None)
        self.g = dense(d, h * v, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.o = dense(h * v, d, ("heads", "embed"), rngs=rngs, dtype=dtype)

    def _gates(self, x):
        """beta [.., H] (or None) and log-decay g [.., H] (or None), in fp32."""
        beta = jax.nn.sigmoid(self.b(x).astype(jnp.float32)) if self.delta else None
        g = None
        if self.decay:
            dt = jax.nn.softplus(self.a(x).astype(jnp.float32) + self.dt_bias[...])
            g = -jnp.exp(self.A_log[...]) * dt
        return beta, g

    def _qkv(self, q, k, v):
        split = lambda y, n: y.reshape(*y.shape[:-1], self.heads, n)
        q, k, v = (jax.nn.silu(y) for y in (q, k, v))
        return l2norm(split(q, self.dk)), l2norm(split(k, self.dk)), split(v, self.dv)

    def _out(self, x, o):
        o = self.o_norm(o) * jax.nn.silu(self.g(x)).reshape(o.shape)
        return self.o(o.reshape(*o.shape[:-2], -1))

    def _qkv_parallel(self, x, segment_ids):
        """q, k [B, T, H, K] and v [B, T, H, V] of a whole sequence."""
        return self._qkv(*(c(p(x), segment_ids) for p, c in self._convs()))

    def _qkv_step(self, x, conv_cache):
        """q, k [B, H, K], v [B, H, V] of one token x [B, d] -> ((q, k, v), the conv cache)."""
        conv, outs = {}, []
        for (proj, c), name in zip(self._convs(), "qkv", strict=True):
            y, conv[name] = c.step(proj(x), conv_cache[name])
            outs.append(y)
        return self._qkv(*outs), conv

    def _convs(self):
        return (self.q, self.q_conv), (self.k, self.k_conv), (self.v, self.v_conv)

    def _conv_cache(self, batch_size: int) -> dict:
        return {n: c.init_cache(batch_size) for n, (_, c) in zip("qkv", self._convs(), strict=True)}

    def __call__(self, x: jax.Array, *, positions: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
        q, k, v = self._qkv_parallel(x, segment_ids)
        beta, g = self._gates(x)
        return self._out(x, self._memory(q, k, v, beta, g, segment_ids))

    def _op(self, q, k, v, beta, g, **options):
        """The block's pallas_kernels op (delta_rule or linear_attention) in its read order -> (o, state)."""
        options.update(g=g, read_before_write=self.read_before_write)
        if self.delta:
            return pallas_kernels.delta_rule(q, k, v, beta.astype(q.dtype), **options)
        return pallas_kernels.linear_attention(q, k, v, **options)

    def _memory(self, q, k, v, beta, g, segment_ids):
        """The kernel over the whole sequence, on each (batch, heads) block of the mesh."""

        def kernel(q, k, v, beta, g, segment_ids):
            return self._op(
                q, k, v, beta, g, segment_ids=segment_ids, chunk_size=self.chunk_size, backend=self.backend
            )[0]

        return map_head_blocks(kernel, q, k, v, beta, g, segment_ids)

    def init_cache(self, batch_size: int, max_len: int) -> dict:
        """O(1) decoding state: the last conv_kernel-1 inputs of each conv and the [B, H, K, V] fp32 memory."""
        return {
            "conv": self._conv_cache(batch_size),
            "state": jnp.zeros((batch_size, self.heads, self.dk, self.dv), jnp.float32),
        }

    def step(self, x: jax.Array, cache: dict, *, position: jax.Array) -> tuple[jax.Array, dict]:
        """One token x [B, d] -> (y [B, d], cache): the op itself on a length-1 sequence from the cached state, in
        fp32 (the token-serial reference is the cheapest backend for one token)."""
        qkv, conv = self._qkv_step(x, cache["conv"])
        q, k, v = (y.astype(jnp.float32)[:, None] for y in qkv)
        beta, g = (None if y is None else y[:, None] for y in self._gates(x))
        o, S = self._op(q, k, v, beta, g, initial_state=cache["state"], return_final_state=True, backend="reference")
        return self._out(x, o[:, 0].astype(x.dtype)), {"conv": conv, "state": S}

    @classmethod
    def forward_flops_per_token(cls, cfg, seq_len: int) -> float:
        """The block around the memory, the beta and alpha projections and the chunked kernel."""
        h, k, v = head_dims(cfg)
        chunk = min(cfg.matrix_chunk_size, seq_len)
        gates = 2.0 * cfg.d_model * h * (cls.delta + cls.decay)
        return cls.block_flops_per_token(cfg) + gates + kernel_flops_per_token(h, k, v, chunk, cls.delta)

    @staticmethod
    def block_flops_per_token(cfg) -> float:
        """q, k, v projections and convs, the output gate and the output projection."""
        d, (h, k, v) = cfg.d_model, head_dims(cfg)
        flops = 2.0 * d * (2 * h * k + 2 * h * v) + 2.0 * h * v * d
        return flops + ShortConv.forward_flops_per_token(2 * h * k + h * v, cfg.conv_kernel)

    @staticmethod
    def state_size(cfg, seq_len: int) -> int:
        """Recurrent state per sequence, in numbers: the H x K x V memory (conv taps excluded), whatever seq_len."""
        h, k, v = head_dims(cfg)
        return h * k * v
