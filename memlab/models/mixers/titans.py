"""Titans' neural memory (`titans`; Behrouz et al. 2024, lucidrains/titans-pytorch): a memory M learned at test
time by gradient steps on 1/2 ||M(k_t) - v_t||^2 with a data-dependent step theta_t = titans_max_lr * sigmoid(.)
and forgetting alpha_t = sigmoid(.), read before the write (token t retrieves M_{t-1}(q_t)), from a learned initial
memory; the block around it (convs, L2-normalised q, k, per-head norm, SiLU gate) is MatrixMixer's.

Linear memory (default): W <- W [(1 - alpha) I - theta k k^T] + theta v k^T, exactly the gated delta rule with
g = log(1 - alpha), beta = theta / (1 - alpha) and value (1 - alpha) v (pallas_kernels.delta_rule,
read_before_write, W0 as initial_state).

`model.titans_momentum` (S_t = eta_t S_{t-1} - theta_t grad_t, M_t = (1 - alpha_t) M_{t-1} + S_t) and
`model.titans_depth=2` (M(x) = x + W2 gelu(W1 x), hidden 4 K, value dim = key dim) are no delta rule: they run a
reference token-serial `lax.scan` with the gradient of each token at the memory just before it (Titans' code takes
the gradients of a chunk at the chunk start; the token-serial form is its chunk length 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from memlab.models.layers import dense
from memlab.models.mixers.fast_weights import FastWeightMixer, head_params, learned_state, segment_starts
from memlab.models.mixers.matrix_block import head_dims, kernel_flops_per_token, map_head_blocks
from memlab.registry import MIXERS

DEPTHS = (1, 2)
DEEP_EXPANSION = 4  # hidden width of the depth-2 memory / key dim (titans-pytorch's MemoryMLP expansion)
FORGET_BIAS = -4.0  # alpha starts near sigmoid(-4) = 0.018


def _memory_fn(params, x):
    if "w" in params:
        return x @ params["w"]
    return x + jax.nn.gelu(x @ params["w1"]) @ params["w2"]


def _token(params, init, mom, q, k, v, theta, keep, eta, reset):
    """One token of one head: reset to (init, 0) at a segment start, read M(q), then the (momentum) gradient step."""
    params = jax.tree.map(lambda p, p0: jnp.where(reset, p0, p), params, init)
    mom = jax.tree.map(lambda m: jnp.where(reset, 0.0, m), mom)
    out = _memory_fn(params, q)
    grad = jax.grad(lambda p: 0.5 * jnp.sum((_memory_fn(p, k) - v) ** 2))(params)
    mom = jax.tree.map(lambda m, d: eta * m - theta * d, mom, grad)
    return jax.tree.map(lambda p, m: keep * p + m, params, mom), mom, out


_batched_token = jax.vmap(jax.vmap(_token, in_axes=(0, 0, 0, 0, 0, 0, 0, 0, 0, None)), in_axes=(0, None) + (0,) * 8)


@MIXERS.register("titans")
class Titans(FastWeightMixer):
    read_before = True

    def __init__(self, cfg, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.check(cfg)
        self.momentum, self.depth, self.max_lr = bool(cfg.titans_momentum), int(cfg.titans_depth), cfg.titans_max_lr
        self.scan = self.momentum or self.depth > 1
        super().__init__(cfg, rngs=rngs, dtype=dtype)
        d, h = cfg.d_model, self.heads
        self.forget = dense(d, h, ("embed", "heads"), rngs=rngs, dtype=dtype, use_bias=True)
        self.forget.bias[...] = jnp.full((h,), FORGET_BIAS)
        if self.momentum:
            self.eta = dense(d, h, ("embed", "heads"), rngs=rngs, dtype=dtype, use_bias=True)
        if self.depth > 1:
            del self.w0
            hidden = DEEP_EXPANSION * self.dk
            self.w1 = learned_state((h, self.dk, hidden), rngs, std=self.dk**-0.5)
            self.w2 = learned_state((h, hidden, self.dv), rngs)

    @staticmethod
    def check(cfg) -> None:
        if cfg.titans_depth not in DEPTHS:
            raise ValueError(f"model.titans_depth={cfg.titans_depth!r} must be one of {DEPTHS}")
        if not isinstance(cfg.titans_momentum, bool):
            raise ValueError(f"model.titans_momentum={cfg.titans_momentum!r} must be True or False")
        if not cfg.titans_max_lr > 0:
            raise ValueError(f"model.titans_max_lr={cfg.titans_max_lr!r} must be a positive step size")
        if cfg.titans_depth > 1 and cfg.matrix_expand_v != 1:
            raise ValueError(
                f"model.matrix_expand_v={cfg.matrix_expand_v}: the depth-2 titans memory x + MLP(x) needs value dim "
                "= key dim; use model.matrix_expand_v=1"
            )

    def _titans_gates(self, x):
        """theta, log(1 - alpha) and momentum eta (or None), each [.., H] in fp32."""
        theta = self.max_lr * jax.nn.sigmoid(self.b(x).astype(jnp.float32))
        log_keep = -jax.nn.softplus(self.forget(x).astype(jnp.float32))  # log(1 - sigmoid(z))
        eta = jax.nn.sigmoid(self.eta(x).astype(jnp.float32)) if self.momentum else None
        return theta, log_keep, eta

    def _gates(self, x):
        """The reparametrisation onto the gated delta rule: beta = theta / (1 - alpha), g = log(1 - alpha)."""
        theta, g, _ = self._titans_gates(x)
        return theta * jnp.exp(-g), g

    def _target(self, q, k, v, g):
        return v * jnp.exp(g)[..., None].astype(v.dtype)

    # the token-serial scan (momentum, depth 2)
    def _init_params(self):
        return {"w": self.w0[...]} if self.depth == 1 else {"w1": self.w1[...], "w2": self.w2[...]}

    def _scan_memory(self, x, q, k, v, segment_ids):
        theta, log_keep, eta = self._titans_gates(x)
        eta = jnp.zeros_like(theta) if eta is None else eta
        B, T = q.shape[:2]
        resets = jnp.zeros((B, T), bool) if segment_ids is None else segment_starts(segment_ids)

        names = sorted(self._init_params())

        def kernel(q, k, v, theta, log_keep, eta, resets, *init):
            init = {n: p[0, 0] for n, p in zip(names, init, strict=True)}
            params = jax.tree.map(lambda p: jnp.broadcast_to(p, (q.shape[0], *p.shape)), init)
            mom = jax.tree.map(jnp.zeros_like, params)

            def serial(carry, xs):
                params, mom = carry
                params, mom, out = _batched_token(params, init, mom, *xs)
                return (params, mom), out

            xs = (q, k, v, theta, jnp.exp(log_keep), eta, resets)
            xs = tuple(jnp.moveaxis(a.astype(jnp.float32) if a.dtype != bool else a, 1, 0) for a in xs)
            _, out = jax.lax.scan(serial, (params, mom), xs)
            return jnp.moveaxis(out, 0, 1)

        init = head_params(*(self._init_params()[n] for n in names))
        return map_head_blocks(kernel, q, k, v, theta, log_keep, eta, resets, *init).astype(q.dtype)

    def _scan_cache(self, batch_size):
        params = jax.tree.map(lambda p: jnp.broadcast_to(p, (batch_size, *p.shape)), self._init_params())
        return {"params": params, "momentum": jax.tree.map(jnp.zeros_like, params)}

    def _scan_step(self, x, q, k, v, state, position):
        theta, log_keep, eta = self._titans_gates(x)
        eta = jnp.zeros_like(theta) if eta is None else eta
        no = jnp.zeros(theta.shape[:1], bool)
        params, mom, out = _batched_token(
            state["params"], self._init_params(), state["momentum"], q, k, v, theta, jnp.exp(log_keep), eta, no
        )
        return out, {"params": params, "momentum": mom}

    @classmethod
    def forward_flops_per_token(cls, cfg, seq_len: int) -> float:
        """The block's projections plus alpha (and eta); the kernel (linear memory), or the token-serial scan: per
        head the read M(q), the forward of M(k) and its backward (twice the forward's MACs)."""
        d, (h, k, v) = cfg.d_model, head_dims(cfg)
        flops = super().forward_flops_per_token(cfg, seq_len) + 2.0 * d * h * (1 + bool(cfg.titans_momentum))
        if not (cfg.titans_momentum or cfg.titans_depth > 1):
            return flops
        flops -= kernel_flops_per_token(h, k, v, min(cfg.matrix_chunk_size, seq_len), True)
        memory_macs = k * v if cfg.titans_depth == 1 else DEEP_EXPANSION * k * (k + v)
        return flops + 2.0 * h * 4 * memory_macs

    @staticmethod
    def state_size(cfg, seq_len: int) -> int:
        """The memory's numbers per sequence (H K V, or H 4K (K + V) at depth 2), twice with momentum."""
        h, k, v = head_dims(cfg)
        size = h * k * v if cfg.titans_depth == 1 else h * DEEP_EXPANSION * k * (k + v)
        return size * (2 if cfg.titans_momentum else 1)
