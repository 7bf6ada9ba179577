"""Building blocks shared by every model family: projections with logical axis names, RMSNorm, RoPE, SwiGLU.

Parameters are created in fp32 with logical axis names (`embed`, `heads`, `mlp`, `vocab`, ...) as metadata;
`memlab.parallel` maps those names to mesh axes. Computation runs in the configured compute dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

default_init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
# U(+-1/sqrt(fan_in)), PyTorch's nn.Linear default (kaiming_uniform with a = sqrt(5)): adapters ported from torch
torch_linear_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def dense(
    in_features: int,
    out_features: int,
    axes: tuple[str | None, str | None],
    *,
    rngs: nnx.Rngs,
    dtype=jnp.float32,
    use_bias: bool = False,
    init=default_init,
    bias_init=None,
) -> nnx.Linear:
    """A linear layer (bias-free unless `use_bias`) whose kernel carries logical axis names `axes` = (input axis,
    output axis); the bias starts at zero unless `bias_init` says otherwise."""
    return nnx.Linear(
        in_features,
        out_features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nnx.with_partitioning(init, axes),
        bias_init=nnx.with_partitioning(bias_init or nnx.initializers.zeros_init(), (axes[1],)),
        rngs=rngs,
    )


def attention_projections(d_model: int, *, rngs: nnx.Rngs, dtype, copy_init: bool) -> tuple[nnx.Linear, ...]:
    """The q, k, v and o projections of an attention layer. `copy_init` starts the layer as a lookup that copies:
    W_k = W_q, so a query scores positions by their similarity to it (W_q W_q^T ~ I), and W_o = W_v^T, so what it
    reads arrives unrotated (W_v W_v^T ~ I); the mimetic initialisation of Trockman & Kolter (2023). The kernels
    are separate parameters that only start equal."""
    q = dense(d_model, d_model, ("embed", "heads"), rngs=rngs, dtype=dtype)
    k_init = (lambda *_: jnp.copy(q.kernel[...])) if copy_init else default_init
    k = dense(d_model, d_model, ("embed", "heads"), rngs=rngs, dtype=dtype, init=k_init)
    v = dense(d_model, d_model, ("embed", "heads"), rngs=rngs, dtype=dtype)
    o_init = (lambda *_: v.kernel[...].T) if copy_init else default_init
    o = dense(d_model, d_model, ("heads", "embed"), rngs=rngs, dtype=dtype, init=o_init)
    return q, k, v, o


def token_embedding(vocab_size: int, d_model: int, *, rngs: nnx.Rngs, dtype=jnp.float32) -> nnx.Embed:
    """Token embedding, fp32 parameters ~ N(0, 1) with logical axes (vocab, embed); every family's input layer."""
    return nnx.Embed(
        vocab_size,
        d_model,
        dtype=dtype,
        param_dtype=jnp.float32,
        embedding_init=nnx.with_partitioning(nnx.initializers.normal(1.0), ("vocab", "embed")),
        rngs=rngs,
    )


def rms_norm(features: int, *, rngs: nnx.Rngs, dtype=jnp.float32, axis_name: str = "embed") -> nnx.RMSNorm:
    """RMSNorm with a learned scale; statistics are computed in fp32 whatever the compute dtype."""
    return nnx.RMSNorm(
        features,
        epsilon=1e-6,
        dtype=dtype,
        param_dtype=jnp.float32,
        scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), (axis_name,)),
        rngs=rngs,
    )


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary position embedding on the last axis of x [B, T, H, D] at integer `positions` [B, T]."""
    half = x.shape[-1] // 2
    freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle = positions[..., None, None].astype(jnp.float32) * freq  # [B, T, 1, half]
    sin, cos = jnp.sin(angle), jnp.cos(angle)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def layer_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """LayerNorm without scale or bias over the last axis, statistics in fp32 (BDH's only normalisation)."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def check_heads(cfg) -> None:
    """ValueError unless `model.d_model` splits into `model.num_heads` heads of even width (RoPE rotates pairs)."""
    if cfg.d_model % cfg.num_heads or (cfg.d_model // cfg.num_heads) % 2:
        raise ValueError(
            f"model.d_model={cfg.d_model} must split into model.num_heads={cfg.num_heads} "
            "heads of even width (RoPE rotates pairs)"
        )


class SwiGLU(nnx.Module):
    """Gated MLP: down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, d_ff: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.gate = dense(d_model, d_ff, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.up = dense(d_model, d_ff, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.down = dense(d_ff, d_model, ("mlp", "embed"), rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.silu(self.gate(x)) * self.up(x))

    @staticmethod
    def forward_flops_per_token(d_model: int, d_ff: int) -> float:
        return 2.0 * 3 * d_model * d_ff


def mlp_width(d_model: int, mlp_ratio: float, multiple_of: int = 16) -> int:
    """SwiGLU hidden width: `mlp_ratio * d_model` rounded up to a multiple (keeps matmuls aligned)."""
    width = int(mlp_ratio * d_model)
    return multiple_of * ((width + multiple_of - 1) // multiple_of)


def compute_dtype(name: str) -> jnp.dtype:
    """Map the config's precision name to a dtype."""
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


class ShortConv(nnx.Module):
    """Causal depthwise convolution over time (kernel a few tokens): y_t = sum_j w_j * x_{t-j}.

    Gives a layer cheap access to the previous few tokens (Zoology's BaseConv, Hyena/Mamba short convs, the conv4 in
    xLSTM and Gated DeltaNet). With `segment_ids`, taps never reach across a document boundary.
    """

    def __init__(self, features: int, kernel_size: int, *, rngs: nnx.Rngs, dtype=jnp.float32, init=None):
        init = init or nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=0, out_axis=1)
        self.kernel = nnx.Param(init(rngs.params(), (kernel_size, features)), out_sharding=(None, "embed"))
        self.bias = nnx.Param(jnp.zeros((features,)), out_sharding=("embed",))
        self.kernel_size, self.dtype = kernel_size, dtype

    def __call__(self, x: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
        w = self.kernel[...].astype(self.dtype)
        out = x * w[0]
        for j in range(1, self.kernel_size):  # a handful of static taps, unrolled by XLA
            shifted = jnp.pad(x, ((0, 0), (j, 0), (0, 0)))[:, : x.shape[1]]
            if segment_ids is not None:
                same = jnp.pad(segment_ids, ((0, 0), (j, 0)), constant_values=-1)[:, : x.shape[1]] == segment_ids
                shifted = shifted * same[..., None].astype(x.dtype)
            out = out + shifted * w[j]
        return out + self.bias[...].astype(self.dtype)

    def init_cache(self, batch_size: int) -> jax.Array:
        """Decoding state: the last kernel_size-1 inputs, newest first: buf[:, j-1] = x_{t-j} (zeros before the
        first token)."""
        return jnp.zeros((batch_size, self.kernel_size - 1, self.kernel.shape[1]), self.dtype)

    def step(self, x: jax.Array, cache: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One token x [B, F] given the previous inputs -> (y_t = sum_j w_j x_{t-j} + bias, the shifted cache)."""
        w = self.kernel[...].astype(self.dtype)
        y = x * w[0] + jnp.einsum("bjf,jf->bf", cache, w[1:]) + self.bias[...].astype(self.dtype)
        return y, jnp.concatenate([x[:, None].astype(cache.dtype), cache[:, :-1]], axis=1)

    @staticmethod
    def forward_flops_per_token(features: int, kernel_size: int) -> float:
        return 2.0 * kernel_size * features
