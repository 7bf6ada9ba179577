"""TTT-Linear (`ttt_linear`; Sun et al. 2024, test-time-training/ttt-lm-jax): each head's memory is the weight W
of an inner model f(k) = k + W k (K = V = head dim) trained on the sequence by gradient descent on the inner loss
1/2 ||f(k_t) - v_t||^2, from a learned initial W0 (N(0, 0.02)); a query reads z_t = f_t(q_t) with the weights
after token t's update, then the block's per-head norm, a GELU gate gelu(W_g x) * z and the output projection.

`model.ttt_variant`:
  "delta"      one GD step per token, without LayerNorm in f: W <- W + eta_t (v_t - k_t - W k_t) k_t^T, exactly the
               delta rule on the target v - k with beta = eta_t (pallas_kernels.delta_rule, scale 1, read after
               the write, W0 as initial_state).
  "minibatch"  the published form: f(k) = k + LN(W k + b) (per-head learned LN; W, b learned initial values),
               mini-batches of b = `model.ttt_minibatch` tokens, every gradient in a mini-batch taken at the
               mini-batch-start weights, token t read with W_0 - sum_{s <= t in its mini-batch} eta_s grad_s
               (the dual form, per-token gradients by jax.grad w.r.t. the inner model's pre-LN output): a
               `lax.scan` over the mini-batches. Mini-batches are fixed blocks of b tokens of the row; a
               packed document starting inside one starts from W0, b0 there.

The token learning rate is eta_t = ttt_base_lr * sigmoid(w_lr . x_t) per head. Keys are L2-normalised by the block
(||k||^2 = 1), which takes the place of ttt-lm-jax's 1 / head_dim (its keys have ||k||^2 ~ head_dim). No
1/i running-average factor and no RoPE on q, k (the block's short convs give position).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from memlab.models.mixers.fast_weights import FastWeightMixer, head_params, segment_starts
from memlab.models.mixers.matrix_block import head_dims, kernel_flops_per_token, map_head_blocks
from memlab.registry import MIXERS

TTT_VARIANTS = ("delta", "minibatch")
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
        sel = lambda a0, a: jnp.where(fresh[:, :, None, None], a0, a)
        base = lambda x: sel(jnp.einsum("bshk,hkv->bshv", x, w0) + b0, jnp.einsum("bshk,bhkv->bshv", x, S) + b[:, None])
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

    def _out(self, x, o):
        o = self.o_norm(o) * jax.nn.gelu(self.g(x)).reshape(o.shape)
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
