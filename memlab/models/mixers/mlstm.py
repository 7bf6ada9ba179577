"""xLSTM's mLSTM block (Beck et al. 2024, fig. 10) as the sequence mixer `mlstm`.

x -> up-projections x_m and z (width model.mlstm_proj_factor * d_model each) -> causal conv + SiLU on x_m ->
head-wise q, k from the conv branch and v from x_m -> input and forget gate pre-activations from [q; k; v] ->
pallas_kernels.mlstm (exponential input gate, stabilised) -> per-head RMSNorm -> + learnable skip * conv branch
-> * SiLU(z) -> down-projection. Gate initialisation follows xLSTM: zero weights, input-gate bias ~ N(0, 0.1),
forget-gate bias linspace(3, 6) over heads (long memories at the start of training). Decoding carries the conv
taps and the (C, n, m) state, O(1) per token. Anchor: NX-AI/xlstm's `mLSTMLayer` (read at 032a6fb).

Deviations from the anchor:
- The q, k, v projections are block-diagonal with one block per head (head dim squared per head); the anchor's
  `qkv_proj_blocksize=4` uses blocks of 4 features (inner / 4 blocks), far fewer parameters. Not yet a knob.
- The output norm is a per-head RMSNorm (eps 1e-6); the anchor's MultiHeadLayerNorm is a per-head LayerNorm (mean
  removed, scale, no bias, eps 1e-5). Not yet a knob.
- Initialisation of the up, q/k/v and down projections: memlab's (truncated normal, fan-in) where the anchor uses
  small_init and wang_init; the gates' initialisation is the anchor's.
- `model.mlstm_proj_factor`: 2 (the anchor); the MQAR comparison runs 1 to match parameter counts.
- The block around it (the anchor's xLSTM block: pre-LayerNorm, residual) is memlab's LM block (pre-RMSNorm).
  The anchor's dropout (0 by default) is not built.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

import pallas_kernels
from memlab.models.layers import ShortConv, dense, rms_norm
from memlab.models.mixers.matrix_block import kernel_flops_per_token, map_head_blocks
from memlab.registry import MIXERS

EPS = 1e-6  # denominator guard of h (xLSTM's value)


def mlstm_dims(cfg) -> tuple[int, int, int]:
    """(heads H, inner width = mlstm_proj_factor * d_model, head dim = inner // H; K = V = head dim)."""
    inner = int(cfg.mlstm_proj_factor * cfg.d_model)
    return cfg.num_heads, inner, inner // cfg.num_heads


def mlstm_kernel_flops_per_token(h: int, dh: int, chunk: int) -> float:
    """Forward FLOPs per token of the chunked mLSTM: the linear-attention kernel's (state read and write,
    C x C scores and weighted sum; see matrix_block.kernel_flops_per_token) plus the normaliser n: its read q . n,
    its write and the row sums of the score matrix."""
    return kernel_flops_per_token(h, dh, dh, chunk, delta=False) + 2.0 * h * (2 * dh + chunk)


class HeadwiseLinear(nnx.Module):
    """Block-diagonal projection [..., H * D] -> [..., H, D]: each head maps only its own slice of the features
    (xLSTM's LinearHeadwiseExpand with one block per head), H times cheaper than a dense map."""

    def __init__(self, heads: int, dim: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
        init = nnx.initializers.variance_scaling(
            1.0, "fan_in", "truncated_normal", in_axis=1, out_axis=2, batch_axis=(0,)
        )
        self.kernel = nnx.Param(init(rngs.params(), (heads, dim, dim)), out_sharding=("heads", None, None))
        self.heads, self.dim, self.dtype = heads, dim, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(*x.shape[:-1], self.heads, self.dim)
        return jnp.einsum("...hd,hde->...he", x, self.kernel[...].astype(self.dtype))


@MIXERS.register("mlstm")
class MLSTM(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs, dtype=jnp.float32):
        d = cfg.d_model
        h, inner, dh = mlstm_dims(cfg)
        self.heads, self.inner, self.dh, self.dtype = h, inner, dh, dtype
        self.backend, self.chunk_size = cfg.matrix_backend, cfg.matrix_chunk_size
        self.up_m = dense(d, inner, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.up_z = dense(d, inner, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.conv = ShortConv(inner, cfg.conv_kernel, rngs=rngs, dtype=dtype)
        self.q, self.k, self.v = (HeadwiseLinear(h, dh, rngs=rngs, dtype=dtype) for _ in range(3))
        zeros = nnx.initializers.zeros_init()
        self.igate = dense(3 * inner, h, (None, "heads"), rngs=rngs, dtype=dtype, use_bias=True, init=zeros)
        self.fgate = dense(3 * inner, h, (None, "heads"), rngs=rngs, dtype=dtype, use_bias=True, init=zeros)
        self.igate.bias[...] = 0.1 * jax.random.normal(rngs.params(), (h,))
        self.fgate.bias[...] = jnp.linspace(3.0, 6.0, h)
        self.o_norm = rms_norm(dh, rngs=rngs, dtype=dtype, axis_name=None)
        self.skip = nnx.Param(jnp.ones((inner,)), out_sharding=("heads",))
        self.down = dense(inner, d, ("heads", "embed"), rngs=rngs, dtype=dtype)

    def _branches(self, x, conv_out):
        """(q, k, v [..., H, dh], gates i, f [..., H] in fp32, SiLU conv branch [..., inner])."""
        xc = jax.nn.silu(conv_out)
        q, k, v = self.q(xc), self.k(xc), self.v(x)
        qkv = jnp.concatenate([y.reshape(*y.shape[:-2], self.inner) for y in (q, k, v)], axis=-1)
        return q, k, v, self.igate(qkv).astype(jnp.float32), self.fgate(qkv).astype(jnp.float32), xc

    def _out(self, h, xc, z):
        h = self.o_norm(h).reshape(*h.shape[:-2], self.inner) + self.skip[...].astype(self.dtype) * xc
        return self.down(h * jax.nn.silu(z))

    def __call__(self, x: jax.Array, *, positions: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
        xm = self.up_m(x)
        q, k, v, i, f, xc = self._branches(xm, self.conv(xm, segment_ids))
        return self._out(self._memory(q, k, v, i, f, segment_ids), xc, self.up_z(x))

    def _memory(self, q, k, v, i, f, segment_ids):
        """The kernel over the whole sequence, on each (batch, heads) block of the mesh."""

        def kernel(q, k, v, i, f, segment_ids):
            return pallas_kernels.mlstm(
                q, k, v, i, f, segment_ids=segment_ids, chunk_size=self.chunk_size, eps=EPS, backend=self.backend
            )[0]

        return map_head_blocks(kernel, q, k, v, i, f, segment_ids)

    def init_cache(self, batch_size: int, max_len: int) -> dict:
        """O(1) decoding state: the conv taps and the empty mLSTM state (C, n, m) = (0, 0, -inf) in fp32."""
        b, h, dh = batch_size, self.heads, self.dh
        state = (
            jnp.zeros((b, h, dh, dh), jnp.float32),
            jnp.zeros((b, h, dh), jnp.float32),
            jnp.full((b, h), -jnp.inf, jnp.float32),
        )
        return {"conv": self.conv.init_cache(batch_size), "state": state}

    def step(self, x: jax.Array, cache: dict, *, position: jax.Array) -> tuple[jax.Array, dict]:
        """One token x [B, d] -> (y [B, d], cache): the op itself on a length-1 sequence from the cached state
        (the token-serial reference is the cheapest backend for one token)."""
        xm = self.up_m(x)
        conv_out, conv = self.conv.step(xm, cache["conv"])
        q, k, v, i, f, xc = self._branches(xm, conv_out)
        h, state = pallas_kernels.mlstm(
            *(y[:, None] for y in (q, k, v, i, f)),
            initial_state=cache["state"],
            return_final_state=True,
            eps=EPS,
            backend="reference",
        )
        return self._out(h[:, 0], xc, self.up_z(x)), {"conv": conv, "state": tuple(state)}

    @staticmethod
    def check(cfg) -> None:
        """The up-projection width must split into the heads; the kernel reads after the write only."""
        if cfg.get("matrix_read", "after") != "after":
            raise ValueError(
                f"model.matrix_read={cfg.matrix_read!r}: the mlstm mixer reads its state after each token's write "
                "only; use model.matrix_read='after' or the gdn, deltanet or hebbian mixer"
            )
        h, inner, _ = mlstm_dims(cfg)
        if inner < h or inner % h:
            raise ValueError(
                f"model.mlstm_proj_factor={cfg.mlstm_proj_factor} gives the mlstm width {inner} = factor "
                f"x model.d_model={cfg.d_model}, which must be a positive multiple of "
                f"model.num_heads={h}"
            )

    @staticmethod
    def forward_flops_per_token(cfg, seq_len: int) -> float:
        d = cfg.d_model
        h, inner, dh = mlstm_dims(cfg)
        flops = 2.0 * d * 2 * inner + 2.0 * inner * d  # up-projections x_m, z and the down-projection
        flops += ShortConv.forward_flops_per_token(inner, cfg.conv_kernel)
        flops += 3 * 2.0 * inner * dh  # head-wise q, k, v
        flops += 2 * 2.0 * 3 * inner * h  # input and forget gates from [q; k; v]
        return flops + mlstm_kernel_flops_per_token(h, dh, min(cfg.matrix_chunk_size, seq_len))

    @staticmethod
    def state_size(cfg, seq_len: int) -> int:
        """Recurrent state per sequence, in numbers: C (H x dh x dh), n (H x dh) and m (H); conv taps excluded."""
        h, _, dh = mlstm_dims(cfg)
        return h * dh * dh + h * dh + h
