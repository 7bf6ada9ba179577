"""TTT-Linear (`ttt_linear`; Sun et al. 2024), as test-time-training/ttt-lm-jax's `TTTLinear` builds it (read at
6f529b1): each head's memory is the weight W (and bias b) of an inner model f(k) = k + LN(W k + b) (per-head learned
LN; K = V = head dim) trained on the sequence by gradient descent on the inner loss 1/2 ||f(k_t) - v_t||^2, in
mini-batches of `model.ttt_minibatch` tokens: every gradient of a mini-batch is taken at its start weights and
token t reads z_t = q_t + LN(W_t q_t + b_t), W_t = W_start - sum_{s <= t in its mini-batch} eta_s grad_s (the dual
form: per-token gradients by jax.grad w.r.t. the inner model's pre-LN output, a `lax.scan` over the mini-batches).
The initial W0 ~ N(0, 0.02), b0 = 0, are learned. Around it: one bias-free projection shared by q and k, then two
causal depthwise convs with bias (no activation) give q and k; v is a plain projection; eta_t = ttt_base_lr *
sigmoid(w_lr . x_t + b_lr) per head; the heads' outputs, merged, pass a LayerNorm over the width (scale and bias),
a GELU gate gelu(W_g x) * z and the output projection.

Mini-batches are fixed blocks of b tokens of the row; a packed document starting inside one starts from W0, b0 there.

Deviations from the anchor:
- Keys are L2-normalised (||k||^2 = 1), which takes the place of the anchor's 1 / head_dim in eta (its keys have
  ||k||^2 ~ head_dim); queries are not normalised, as the anchor's.
- No 1/i token-index factor on eta (the anchor's learnable `token_idx`, a running average within the mini-batch),
  and no RoPE on q, k (the convs give position): both left out of memlab's mixers, which carry no positions.
- `model.ttt_inputs`: "shared_qk" (the anchor) | "matrix" (MatrixMixer's separate q, k, v projections, each with a
  conv and SiLU, q and k L2-normalised).
- `model.ttt_post_norm`: "layer" (the anchor's LayerNorm over the width) | "rms_head" (a per-head RMSNorm).
- `model.ttt_lr_bias`: True (the anchor) | False (the learning-rate gate without bias).
- `model.ttt_variant="delta"`: memlab's own, no counterpart in the anchor: one GD step per token without LN in f,
  W <- W + eta_t (v_t - k_t - W k_t) k_t^T, exactly the delta rule on the target v - k with beta = eta_t
  (pallas_kernels.delta_rule, scale 1, read after the write, W0 as initial_state).
- The anchor's block-level `pre_conv` (a residual conv sub-layer before the TTT layer in its LM block) belongs to
  its LM, not to the layer; memlab's LM has none. Projections use memlab's init (truncated normal, fan-in) where the
  anchor draws N(0, 0.02); the convs' kernels are the same family (LeCun normal).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from memlab.models.layers import ShortConv, dense
from memlab.models.mixers.fast_weights import FastWeightMixer, head_params, segment_starts
from memlab.models.mixers.matrix_block import MatrixMixer, head_dims, kernel_flops_per_token, l2norm, map_head_blocks
from memlab.registry import MIXERS

TTT_VARIANTS = ("delta", "minibatch")
TTT_INPUTS = ("shared_qk", "matrix")
TTT_POST_NORMS = ("layer", "rms_head")
# What a config saved before a knob existed ran with: memlab's earlier ttt_linear.
LEGACY = {"ttt_inputs": "matrix", "ttt_post_norm": "rms_head", "ttt_lr_bias": False}


def knob(cfg, name: str):
    """cfg's ttt knob `name`, or what memlab's earlier ttt_linear did for a config saved without it."""
    return cfg[name] if name in cfg else LEGACY[name]


LN_EPS = 1e-6


def _layer_norm(z, gamma, beta):
    z = z - jnp.mean(z, axis=-1, keepdims=True)
    return gamma * z * jax.lax.rsqrt(jnp.mean(z * z, axis=-1, keepdims=True) + LN_EPS) + beta


def _inner_grad(z, target, gamma, beta):
    """Per-token gradient of 1/2 ||LN(z) - target||^2 w.r.t. the pre-LN output z [..., V] (tokens independent)."""
    return jax.grad(lambda z: 0.5 * jnp.sum((_layer_norm(z, gamma, beta) - target) ** 2))(z)


def minibatch_ttt(q, k, v, eta, segment_ids, w0, b0, gamma, beta, size):
    """Mini-batch TTT-Linear with LN (dual form) over a sequence: q, k, v [B, T, H, K], eta [B, T, H], w0 [H, K, V],
    b0, gamma, beta [H, V] -> z - q [B, T, H, V] (what the inner LN branch reads), fp32."""
    B, T, H, K = q.shape
    f32 = lambda a: a.astype(jnp.float32)
    q, k, v, eta = f32(q), f32(k), f32(v), f32(eta)
    seg = jnp.zeros((B, T), jnp.int32) if segment_ids is None else segment_ids
    fresh_start = segment_starts(seg)
    pad = -T % size
    if pad:  # trailing tokens with eta 0 in the last segment: they change nothing
        q, k, v, eta = (jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2)) for a in (q, k, v, eta))
        seg, fresh_start = jnp.pad(seg, [(0, 0), (0, pad)], mode="edge"), jnp.pad(fresh_start, [(0, 0), (0, pad)])
    n = q.shape[1] // size
    blocks = lambda a: jnp.moveaxis(a.reshape(B, n, size, *a.shape[2:]), 1, 0)
    causal = jnp.tril(jnp.ones((size, size), bool))

    def block(carry, xs):
        S, b = carry
        q, k, v, eta, seg, fresh = xs
        fresh = jnp.cumsum(fresh, axis=1) > 0  # [B, n]: the token's document started inside this mini-batch
        now = lambda x: jnp.einsum("bshk,bhkv->bshv", x, S) + b[:, None]
        start = lambda x: jnp.where(fresh[:, :, None, None], jnp.einsum("bshk,hkv->bshv", x, w0) + b0, now(x))
        base = start if segment_ids is not None else now  # a packed row: tokens of a fresh document from W0, b0
        grads = _inner_grad(base(k), v - k, gamma, beta)  # [B, n, H, V]
        same = (seg[:, :, None] == seg[:, None, :]) & causal  # [B, t, s]
        weights = (jnp.einsum("bthk,bshk->bhts", q, k) + 1.0) * same[:, None] * jnp.moveaxis(eta, 2, 1)[:, :, None]
        z = _layer_norm(base(q) - jnp.einsum("bhts,bshv->bthv", weights, grads), gamma, beta)
        last = (seg == seg[:, -1:])[:, :, None] * eta  # the row's last document: its updates form the carry
        keep = fresh[:, -1, None, None]
        S = jnp.where(keep[..., None], w0, S) - jnp.einsum("bsh,bshk,bshv->bhkv", last, k, grads)
        b = jnp.where(keep, b0, b) - jnp.einsum("bsh,bshv->bhv", last, grads)
        return (S, b), z

    init = (jnp.broadcast_to(w0, (B, *w0.shape)), jnp.broadcast_to(b0, (B, *b0.shape)))
    _, z = jax.lax.scan(block, init, tuple(map(blocks, (q, k, v, eta, seg, fresh_start))))
    return jnp.moveaxis(z, 0, 1).reshape(B, n * size, H, -1)[:, :T]


@MIXERS.register("ttt_linear")
class TTTLinear(FastWeightMixer):
    read_before = False

    def __init__(self, cfg, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.check(cfg)
        self.scan = cfg.ttt_variant == "minibatch"
        self.base_lr, self.minibatch = float(cfg.ttt_base_lr), int(cfg.ttt_minibatch)
        self.shared_qk, self.layer_norm = knob(cfg, "ttt_inputs") == "shared_qk", knob(cfg, "ttt_post_norm") == "layer"
        self.beta_bias = bool(knob(cfg, "ttt_lr_bias"))
        super().__init__(cfg, rngs=rngs, dtype=dtype)
        if self.scan:
            self.b0 = nnx.Param(jnp.zeros((self.heads, self.dv)), out_sharding=("heads", None))
            self.ln_scale = nnx.Param(jnp.ones((self.heads, self.dv)), out_sharding=("heads", None))
            self.ln_bias = nnx.Param(jnp.zeros((self.heads, self.dv)), out_sharding=("heads", None))

    @staticmethod
    def check(cfg) -> None:
        if cfg.ttt_variant not in TTT_VARIANTS:
            raise ValueError(f"model.ttt_variant={cfg.ttt_variant!r} must be one of {', '.join(TTT_VARIANTS)}")
        if not cfg.ttt_base_lr > 0:
            raise ValueError(f"model.ttt_base_lr={cfg.ttt_base_lr!r} must be a positive learning rate")
        if not isinstance(cfg.ttt_minibatch, int) or cfg.ttt_minibatch < 1:
            raise ValueError(f"model.ttt_minibatch={cfg.ttt_minibatch!r} must be a positive number of tokens")
        if cfg.matrix_expand_v != 1:
            raise ValueError(
                f"model.matrix_expand_v={cfg.matrix_expand_v}: ttt_linear's inner model k + W k needs value dim = key "
                "dim; use model.matrix_expand_v=1"
            )
        for name, allowed in (("ttt_inputs", TTT_INPUTS), ("ttt_post_norm", TTT_POST_NORMS)):
            if knob(cfg, name) not in allowed:
                raise ValueError(f"model.{name}={knob(cfg, name)!r} must be one of {', '.join(allowed)}")
        if not isinstance(knob(cfg, "ttt_lr_bias"), bool):
            raise ValueError(f"model.ttt_lr_bias={cfg.ttt_lr_bias!r} must be True or False")
        if cfg.get("matrix_read", "after") != "after":
            raise ValueError(
                f"model.matrix_read={cfg.matrix_read!r}: ttt_linear reads its weights after each token's update "
                "(as TTT does); use model.matrix_read='after' (titans reads before)"
            )

    def _gates(self, x):
        """eta [.., H] (the delta rule's beta) in fp32, no decay."""
        return self.base_lr * jax.nn.sigmoid(self.b(x).astype(jnp.float32)), None

    def _target(self, q, k, v, g):
        return v - k

    def _read(self, q, o):
        return q + o

    # the block around the memory
    def _init_inputs(self, cfg, rngs, dtype) -> None:
        if not self.shared_qk:
            return super()._init_inputs(cfg, rngs, dtype)
        d, h, k = cfg.d_model, self.heads, self.dk
        self.qk = dense(d, h * k, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.v = dense(d, h * self.dv, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.q_conv = ShortConv(h * k, cfg.conv_kernel, rngs=rngs, dtype=dtype)
        self.k_conv = ShortConv(h * k, cfg.conv_kernel, rngs=rngs, dtype=dtype)

    def _init_output(self, cfg, rngs, dtype) -> None:
        if not self.layer_norm:
            return super()._init_output(cfg, rngs, dtype)
        d, width = cfg.d_model, self.heads * self.dv
        axes = lambda init: nnx.with_partitioning(init, ("heads",))
        self.post_norm = nnx.LayerNorm(
            width, epsilon=LN_EPS, scale_init=axes(nnx.initializers.ones_init()),
            bias_init=axes(nnx.initializers.zeros_init()), rngs=rngs, dtype=dtype,
        )  # fmt: skip
        self.g = dense(d, width, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.o = dense(width, d, ("heads", "embed"), rngs=rngs, dtype=dtype)

    def _heads(self, q, k, v):
        split = lambda y, n: y.reshape(*y.shape[:-1], self.heads, n)
        return split(q, self.dk), l2norm(split(k, self.dk)), split(v, self.dv)

    def _qkv_parallel(self, x, segment_ids):
        if not self.shared_qk:
            return super()._qkv_parallel(x, segment_ids)
        y = self.qk(x)
        return self._heads(self.q_conv(y, segment_ids), self.k_conv(y, segment_ids), self.v(x))

    def _qkv_step(self, x, conv_cache):
        if not self.shared_qk:
            return super()._qkv_step(x, conv_cache)
        y = self.qk(x)
        (q, cq), (k, ck) = self.q_conv.step(y, conv_cache["q"]), self.k_conv.step(y, conv_cache["k"])
        return self._heads(q, k, self.v(x)), {"q": cq, "k": ck}

    def _conv_cache(self, batch_size: int) -> dict:
        if not self.shared_qk:
            return super()._conv_cache(batch_size)
        return {"q": self.q_conv.init_cache(batch_size), "k": self.k_conv.init_cache(batch_size)}

    def _out(self, x, o):
        gate = jax.nn.gelu(self.g(x))
        if self.layer_norm:
            return self.o(self.post_norm(o.reshape(*o.shape[:-2], -1)) * gate)
        o = self.o_norm(o) * gate.reshape(o.shape)
        return self.o(o.reshape(*o.shape[:-2], -1))

    def _inner(self):
        return self.w0[...], self.b0[...], self.ln_scale[...], self.ln_bias[...]

    def _scan_memory(self, x, q, k, v, segment_ids):
        eta, _ = self._gates(x)

        def kernel(q, k, v, eta, segment_ids, *inner):
            return minibatch_ttt(q, k, v, eta, segment_ids, *(p[0, 0] for p in inner), self.minibatch)

        return q + map_head_blocks(kernel, q, k, v, eta, segment_ids, *head_params(*self._inner())).astype(q.dtype)

    def _scan_cache(self, batch_size):
        """Weights at the mini-batch start and after the last token: (S, b) each, [B, H, K, V] and [B, H, V]."""
        w0, b0 = (jnp.broadcast_to(a, (batch_size, *a.shape)) for a in self._inner()[:2])
        return {"start": (w0, b0), "now": (w0, b0)}

    def _scan_step(self, x, q, k, v, state, position):
        w0, b0, gamma, beta = self._inner()
        eta = self._gates(x)[0][..., None]
        (S0, c0), (S, c) = state["start"], state["now"]
        grad = _inner_grad(jnp.einsum("bhk,bhkv->bhv", k, S0) + c0, v - k, gamma, beta)
        S, c = S - eta[..., None] * k[..., None] * grad[..., None, :], c - eta * grad
        z = q + _layer_norm(jnp.einsum("bhk,bhkv->bhv", q, S) + c, gamma, beta)
        ends = (position + 1) % self.minibatch == 0
        start = jax.tree.map(lambda new, old: jnp.where(ends, new, old), (S, c), (S0, c0))
        return z, {"start": start, "now": (S, c)}

    @staticmethod
    def block_flops_per_token(cfg) -> float:
        """The matrix block's, or the anchor's: the shared q/k projection and two convs, v, gate and output."""
        if knob(cfg, "ttt_inputs") == "matrix":
            return MatrixMixer.block_flops_per_token(cfg)
        d, (h, k, v) = cfg.d_model, head_dims(cfg)
        flops = 2.0 * d * (h * k + 2 * h * v) + 2.0 * h * v * d
        return flops + ShortConv.forward_flops_per_token(2 * h * k, cfg.conv_kernel)

    @classmethod
    def forward_flops_per_token(cls, cfg, seq_len: int) -> float:
        """The block's projections and kernel (delta); minibatch: instead of the kernel, per head the inner model
        at the mini-batch start on k and q (2 K V MACs), the dual-form scores and sums over the mini-batch
        (b K + b V) and the end-of-mini-batch weight update (K V)."""
        flops = super().forward_flops_per_token(cfg, seq_len)
        if cfg.ttt_variant != "minibatch":
            return flops
        h, k, v = head_dims(cfg)
        b = min(cfg.ttt_minibatch, seq_len)
        kernel = kernel_flops_per_token(h, k, v, min(cfg.matrix_chunk_size, seq_len), True)
        return flops - kernel + 2.0 * h * (3 * k * v + b * k + b * v)

    @staticmethod
    def state_size(cfg, seq_len: int) -> int:
        """H x K x V (delta); minibatch: W and b at the mini-batch start and now, 2 H (K V + V)."""
        h, k, v = head_dims(cfg)
        return h * k * v if cfg.ttt_variant != "minibatch" else 2 * h * (k * v + v)
