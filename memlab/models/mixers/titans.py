"""Titans' neural memory (`titans`; Behrouz et al. 2024), as lucidrains/titans-pytorch's `NeuralMemory` builds it
at its defaults with chunk size 1 (read at cc016eb): a memory M, the weights of a small model, written at test time
by gradient steps on the inner loss mean_j (M(k_t) - v_t)_j^2 with a data-dependent step theta_t = titans_max_lr *
sigmoid(.), momentum S_t = eta_t S_{t-1} - theta_t grad_t and forgetting M_t = (1 - alpha_t) M_{t-1} + S_t; token
t reads M_t(q_t), after its own write. Every gradient of a sequence is taken at the initial memory M_0 (the anchor's
`batch_size=None`: one forward call is one update batch); decoding does the same, so the two agree.

The memory (depth 2): M(x) = x + LN(gelu(x W1) W2) (gamma + 1), LN without affine, exact GELU, hidden 4 K, gamma a
memory weight too (zero at the start); depth 1 drops W1 and the GELU. M_0 is Xavier-uniform and shared by the heads.
Around it: RMSNorm(x) (one for storing, one for retrieving), bias-free q, k, v projections (no conv, activation or
L2 norm), theta, eta, alpha from biased projections of the stored input, a per-head sigmoid gate on what is
retrieved and a bias-free projection combining the heads (neither at one head when H V = d_model, as the anchor).

The general form runs a token-serial `lax.scan` (the anchor's per-token weights are the same numbers). A linear
memory without momentum or residual, each gradient at the memory just before it, is the gated delta rule
W <- W [(1 - alpha) I - theta' k k^T] + theta' v k^T (theta' = theta, or 2 theta / V for the mean loss) with
g = log(1 - alpha), beta = theta' / (1 - alpha) and value (1 - alpha) v, and runs on pallas_kernels.delta_rule.

Deviations from the anchor:
- `model.titans_read`: "after" (the anchor) | "before" (token t reads M_{t-1}(q_t), as delta-mem and BDH).
- `model.titans_loss`: "mean" (the anchor's mean over features) | "half_sum" (1/2 ||M(k) - v||^2: V / 2 times the
  step at the same titans_max_lr).
- `model.titans_grad_batch`: 0 (the anchor's default: every gradient at M_0) | b (the anchor's `batch_size=b`:
  the gradients of each block of b tokens at the memory after the previous block; 1 = token-serial).
- `model.titans_residual`: "norm" (the anchor's LN residual) | "plain" (x + MLP(x)) | "none" (MLP(x)).
- `model.titans_gelu`: "exact" (the anchor) | "tanh" (the tanh approximation).
- `model.titans_block`: "anchor" (as above) | "matrix" (MatrixMixer's block: convs, SiLU, L2-normalised q, k,
  per-head RMSNorm, SiLU output gate, no pre-norm; the lr projection without bias).
- `model.titans_init`: "xavier_shared" (the anchor) | "normal" (N(0, 0.02) per head; W1 N(0, 1/K)).
- `model.titans_forget_bias`: the alpha projection's bias at the start; 0.0 is the mean of the anchor's PyTorch
  default (U(+-1/sqrt(d)), alpha ~ 0.5); memlab's earlier titans used -4 (alpha ~ 0.018).
- Initialisation of the projections: memlab's (truncated normal, fan-in; biases zero) rather than PyTorch's
  kaiming-uniform weights and uniform biases, as for every memlab layer. RMSNorm eps 1e-6 (PyTorch: machine eps).
- Packed documents (segment ids) restart from M_0 with zero momentum, update batches counted from their start;
  the anchor has no packing.
- Not built (off at the anchor's defaults): chunk sizes above 1 (chunk-shared gates), max_grad_norm, per-parameter
  lr modulation, qk RMSNorm, post RMSNorm, several kv per token, spectral-normed surprises, weight residuals.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from memlab.models.layers import dense, layer_norm, rms_norm
from memlab.models.mixers.fast_weights import FastWeightMixer, head_params, learned_state, segment_starts
from memlab.models.mixers.matrix_block import MatrixMixer, head_dims, kernel_flops_per_token, map_head_blocks
from memlab.registry import MIXERS

DEPTHS = (1, 2)
DEEP_EXPANSION = 4  # hidden width of the depth-2 memory / key dim (the anchor's MemoryMLP expansion)
CHOICES = {
    "titans_read": ("after", "before"),
    "titans_loss": ("mean", "half_sum"),
    "titans_residual": ("norm", "plain", "none"),
    "titans_gelu": ("exact", "tanh"),
    "titans_block": ("anchor", "matrix"),
    "titans_init": ("xavier_shared", "normal"),
}
# What a config saved before a knob existed ran with: memlab's earlier titans (titans_residual: see `knob`).
LEGACY = {
    "titans_read": "before",
    "titans_loss": "half_sum",
    "titans_grad_batch": 1,
    "titans_gelu": "tanh",
    "titans_block": "matrix",
    "titans_init": "normal",
    "titans_forget_bias": -4.0,
}


def knob(cfg, name: str):
    """cfg's titans knob `name`, or what memlab's earlier titans did for a config saved without it."""
    if name in cfg:
        return cfg[name]
    if name == "titans_residual":
        return "plain" if cfg.titans_depth > 1 else "none"
    return LEGACY[name]


def uses_scan(cfg) -> bool:
    """False where the memory is the gated delta rule (the kernel); True for the token-serial scan."""
    deep = cfg.titans_momentum or cfg.titans_depth > 1 or knob(cfg, "titans_residual") != "none"
    return deep or knob(cfg, "titans_grad_batch") != 1


def has_projection(cfg) -> bool:
    """The anchor block combines heads with a projection unless one head already spans d_model."""
    h, _, v = head_dims(cfg)
    return knob(cfg, "titans_block") == "matrix" or h > 1 or h * v != cfg.d_model


@dataclasses.dataclass(frozen=True)
class Memory:
    """The memory model M(x) = [x +] [LN(.) (gamma + 1) of] MLP(x) and its inner loss; params per head."""

    residual: str
    exact_gelu: bool
    mean_loss: bool

    def __call__(self, params, x):
        if "w0" in params:
            y = x @ params["w0"]
        else:
            y = jax.nn.gelu(x @ params["w1"], approximate=not self.exact_gelu) @ params["w2"]
        if self.residual == "norm":
            return x + layer_norm(y) * (params["gamma"] + 1.0)
        return x + y if self.residual == "plain" else y

    def loss(self, params, k, v):
        err = (self(params, k) - v) ** 2
        return jnp.mean(err) if self.mean_loss else 0.5 * jnp.sum(err)


def _token(memory, read_after, grad_at, params, base, mom, init, q, k, v, theta, keep, eta, reset, refresh):
    """One token of one head: reset to (M_0, 0) at a segment start (reset None: no packing), the gradient at
    `grad_at` ("init": M_0; "params": the memory before this token; "base": the memory at the update batch's start,
    which moves on where `refresh`), the momentum step, the read of M(q) before or after it."""
    if reset is not None:
        restart = lambda tree: jax.tree.map(lambda p, p0: jnp.where(reset, p0, p), tree, init)
        params, base = restart(params), restart(base) if refresh is not None else base
        mom = jax.tree.map(lambda m: jnp.where(reset, 0.0, m), mom)
    if not read_after:
        out = memory(params, q)
    grad = jax.grad(memory.loss)({"init": init, "params": params, "base": base}[grad_at], k, v)
    mom = jax.tree.map(lambda m, d: eta * m - theta * d, mom, grad)
    params = jax.tree.map(lambda p, m: keep * p + m, params, mom)
    if read_after:
        out = memory(params, q)
    if refresh is not None:
        base = jax.tree.map(lambda b, p: jnp.where(refresh, p, b), base, params)
    return params, base, mom, out


def _batched_token(memory, read_after, grad_at):
    heads = jax.vmap(functools.partial(_token, memory, read_after, grad_at), in_axes=(0,) * 10 + (None, None))
    return jax.vmap(heads, in_axes=(0, 0, 0, None) + (0,) * 8)


@MIXERS.register("titans")
class Titans(FastWeightMixer):
    def __init__(self, cfg, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.check(cfg)
        self.momentum, self.depth, self.max_lr = bool(cfg.titans_momentum), int(cfg.titans_depth), cfg.titans_max_lr
        self.anchor_block = knob(cfg, "titans_block") == "anchor"
        self.beta_bias = self.anchor_block
        self.read_before = knob(cfg, "titans_read") == "before"
        self.grad_batch, self.residual = int(knob(cfg, "titans_grad_batch")), knob(cfg, "titans_residual")
        self.memory = Memory(self.residual, knob(cfg, "titans_gelu") == "exact", knob(cfg, "titans_loss") == "mean")
        self.shared_init = knob(cfg, "titans_init") == "xavier_shared"
        self.scan = uses_scan(cfg)
        super().__init__(cfg, rngs=rngs, dtype=dtype)
        d, h = cfg.d_model, self.heads
        self.forget = dense(d, h, ("embed", "heads"), rngs=rngs, dtype=dtype, use_bias=True)
        self.forget.bias[...] = jnp.full((h,), float(knob(cfg, "titans_forget_bias")))
        if self.momentum:
            self.eta = dense(d, h, ("embed", "heads"), rngs=rngs, dtype=dtype, use_bias=True)

    @staticmethod
    def check(cfg) -> None:
        if cfg.titans_depth not in DEPTHS:
            raise ValueError(f"model.titans_depth={cfg.titans_depth!r} must be one of {DEPTHS}")
        if not isinstance(cfg.titans_momentum, bool):
            raise ValueError(f"model.titans_momentum={cfg.titans_momentum!r} must be True or False")
        if not cfg.titans_max_lr > 0:
            raise ValueError(f"model.titans_max_lr={cfg.titans_max_lr!r} must be a positive step size")
        for name, allowed in CHOICES.items():
            if knob(cfg, name) not in allowed:
                raise ValueError(f"model.{name}={knob(cfg, name)!r} must be one of {', '.join(allowed)}")
        batch = knob(cfg, "titans_grad_batch")
        if not isinstance(batch, int) or batch < 0:
            raise ValueError(f"model.titans_grad_batch={batch!r} must be 0 (every gradient at M_0) or a token count")
        if knob(cfg, "titans_residual") != "none" and cfg.matrix_expand_v != 1:
            raise ValueError(
                f"model.matrix_expand_v={cfg.matrix_expand_v}: the residual titans memory x + ... needs value dim = "
                "key dim; use model.matrix_expand_v=1 or model.titans_residual=none"
            )

    # the memory's parameters: M_0
    def _shapes(self) -> dict:
        k, v, hidden = self.dk, self.dv, DEEP_EXPANSION * self.dk
        shapes = {"w0": (k, v)} if self.depth == 1 else {"w1": (k, hidden), "w2": (hidden, v)}
        return shapes | ({"gamma": (v,)} if self.residual == "norm" else {})

    def _init_memory(self, cfg, rngs: nnx.Rngs) -> None:
        xavier = jax.nn.initializers.glorot_uniform(in_axis=0, out_axis=1)
        for name, shape in self._shapes().items():
            if self.shared_init:
                value = jnp.zeros(shape) if name == "gamma" else xavier(rngs.params(), shape)
                setattr(self, name, nnx.Param(value, out_sharding=(None,) * len(shape)))
            elif name == "gamma":
                setattr(self, name, nnx.Param(jnp.zeros((self.heads, *shape)), out_sharding=("heads", None)))
            else:
                std = shape[0] ** -0.5 if name == "w1" else 0.02
                setattr(self, name, learned_state((self.heads, *shape), rngs, std=std))

    def _init_params(self) -> dict:
        """M_0 per head, {name: [H, ...]}."""
        params = {n: getattr(self, n)[...] for n in self._shapes()}
        if self.shared_init:
            params = {n: jnp.broadcast_to(p, (self.heads, *p.shape)) for n, p in params.items()}
        return params

    def initial_state(self) -> jax.Array:
        return self._init_params()["w0"]

    # the block around the memory
    def _init_inputs(self, cfg, rngs, dtype) -> None:
        if not self.anchor_block:
            return super()._init_inputs(cfg, rngs, dtype)
        d, h, k, v = cfg.d_model, self.heads, self.dk, self.dv
        self.store_norm = rms_norm(d, rngs=rngs, dtype=dtype)
        self.retrieve_norm = rms_norm(d, rngs=rngs, dtype=dtype)
        self.q = dense(d, h * k, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.k = dense(d, h * k, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.v = dense(d, h * v, ("embed", "heads"), rngs=rngs, dtype=dtype)

    def _init_output(self, cfg, rngs, dtype) -> None:
        if not self.anchor_block:
            return super()._init_output(cfg, rngs, dtype)
        d, h, v = cfg.d_model, self.heads, self.dv
        self.gate = dense(d, h, ("embed", "heads"), rngs=rngs, dtype=dtype) if h > 1 else None
        self.o = dense(h * v, d, ("heads", "embed"), rngs=rngs, dtype=dtype) if has_projection(cfg) else None

    def _anchor_qkv(self, x):
        split = lambda y, n: y.reshape(*y.shape[:-1], self.heads, n)
        stored, retrieved = self.store_norm(x), self.retrieve_norm(x)
        return split(self.q(retrieved), self.dk), split(self.k(stored), self.dk), split(self.v(stored), self.dv)

    def _qkv_parallel(self, x, segment_ids):
        return self._anchor_qkv(x) if self.anchor_block else super()._qkv_parallel(x, segment_ids)

    def _qkv_step(self, x, conv_cache):
        return (self._anchor_qkv(x), conv_cache) if self.anchor_block else super()._qkv_step(x, conv_cache)

    def _conv_cache(self, batch_size: int) -> dict:
        return {} if self.anchor_block else super()._conv_cache(batch_size)

    def _out(self, x, o):
        if not self.anchor_block:
            return super()._out(x, o)
        if self.gate is not None:
            o = o * jax.nn.sigmoid(self.gate(self.retrieve_norm(x)))[..., None]
        o = o.reshape(*o.shape[:-2], -1)
        return o if self.o is None else self.o(o)

    def _titans_gates(self, x):
        """theta, log(1 - alpha) and momentum eta (zero without momentum), each [.., H] in fp32."""
        x = self.store_norm(x) if self.anchor_block else x
        theta = self.max_lr * jax.nn.sigmoid(self.b(x).astype(jnp.float32))
        log_keep = -jax.nn.softplus(self.forget(x).astype(jnp.float32))  # log(1 - sigmoid(z))
        eta = jax.nn.sigmoid(self.eta(x).astype(jnp.float32)) if self.momentum else jnp.zeros_like(theta)
        return theta, log_keep, eta

    # the gated delta rule (the kernel)
    def _gates(self, x):
        """beta = theta' / (1 - alpha), g = log(1 - alpha); theta' = 2 theta / V for the mean loss."""
        theta, g, _ = self._titans_gates(x)
        scale = 2.0 / self.dv if self.memory.mean_loss else 1.0
        return scale * theta * jnp.exp(-g), g

    def _target(self, q, k, v, g):
        return v * jnp.exp(g)[..., None].astype(v.dtype)

    # the token-serial scan
    def _grad_at(self) -> str:
        return {0: "init", 1: "params"}.get(self.grad_batch, "base")

    def _refresh(self, position):
        """Whether token `position` ends an update batch (the gradients' weights move to the memory after it);
        None unless the gradients are taken at a batch start that moves (titans_grad_batch > 1)."""
        return (position + 1) % self.grad_batch == 0 if self._grad_at() == "base" else None

    def _scan_memory(self, x, q, k, v, segment_ids):
        theta, log_keep, eta = self._titans_gates(x)
        B, T = q.shape[:2]
        resets = positions = None
        if segment_ids is not None:
            resets = segment_starts(segment_ids)
            positions = jnp.arange(T) - jax.lax.cummax(jnp.where(resets, jnp.arange(T), 0), axis=1)  # in the document
        refresh = self._refresh(jnp.broadcast_to(jnp.arange(T), (B, T)) if positions is None else positions)
        names = sorted(self._shapes())
        token = _batched_token(self.memory, not self.read_before, self._grad_at())

        def kernel(q, k, v, theta, log_keep, eta, resets, refresh, *init):
            init = {n: p[0, 0] for n, p in zip(names, init, strict=True)}
            params = jax.tree.map(lambda p: jnp.broadcast_to(p, (q.shape[0], *p.shape)), init)
            base = params if refresh is not None else {}

            def serial(carry, xs):
                params, base, mom, out = token(*carry, init, *xs)
                return (params, base, mom), out

            xs = (q, k, v, theta, jnp.exp(log_keep), eta, resets, refresh)
            xs = tuple(
                None if a is None else jnp.moveaxis(a if a.dtype == bool else a.astype(jnp.float32), 1, 0) for a in xs
            )
            _, out = jax.lax.scan(serial, (params, base, jax.tree.map(jnp.zeros_like, params)), xs)
            return jnp.moveaxis(out, 0, 1)

        init = head_params(*(self._init_params()[n] for n in names))
        return map_head_blocks(kernel, q, k, v, theta, log_keep, eta, resets, refresh, *init).astype(q.dtype)

    def _scan_cache(self, batch_size):
        params = jax.tree.map(lambda p: jnp.broadcast_to(p, (batch_size, *p.shape)), self._init_params())
        base = params if self._grad_at() == "base" else {}
        return {"params": params, "base": base, "momentum": jax.tree.map(jnp.zeros_like, params)}

    def _scan_step(self, x, q, k, v, state, position):
        theta, log_keep, eta = self._titans_gates(x)
        refresh = self._refresh(jnp.broadcast_to(position, theta.shape[:1]))
        token = _batched_token(self.memory, not self.read_before, self._grad_at())
        params, base, mom, out = token(
            state["params"], state["base"], state["momentum"], self._init_params(), q, k, v, theta,
            jnp.exp(log_keep), eta, None, refresh,
        )  # fmt: skip
        return out, {"params": params, "base": base, "momentum": mom}

    # accounting
    @staticmethod
    def block_flops_per_token(cfg) -> float:
        """The matrix block's, or the anchor's: q, k, v projections, the retrieve gate and the head projection."""
        if knob(cfg, "titans_block") == "matrix":
            return MatrixMixer.block_flops_per_token(cfg)
        d, (h, k, v) = cfg.d_model, head_dims(cfg)
        flops = 2.0 * d * (2 * h * k + h * v + (h if h > 1 else 0))
        return flops + (2.0 * h * v * d if has_projection(cfg) else 0.0)

    @classmethod
    def forward_flops_per_token(cls, cfg, seq_len: int) -> float:
        """The block, theta, alpha (and eta); the kernel, or the token-serial scan: per head the read M(q), the
        forward of M(k), its weight gradient (depth 2: and the gradient into the hidden layer) and the update of
        every memory number (the momentum step, 3 FLOPs, and the decay, 2)."""
        d, (h, k, v) = cfg.d_model, head_dims(cfg)
        flops = super().forward_flops_per_token(cfg, seq_len) + 2.0 * d * h * (1 + bool(cfg.titans_momentum))
        if not uses_scan(cfg):
            return flops
        flops -= kernel_flops_per_token(h, k, v, min(cfg.matrix_chunk_size, seq_len), True)
        memory_macs = k * v if cfg.titans_depth == 1 else DEEP_EXPANSION * k * (k + v)
        hidden_grad = 0 if cfg.titans_depth == 1 else DEEP_EXPANSION * k * v
        numbers = memory_macs + (v if knob(cfg, "titans_residual") == "norm" else 0)
        return flops + h * (2.0 * (3 * memory_macs + hidden_grad) + 5.0 * numbers)

    @staticmethod
    def state_size(cfg, seq_len: int) -> int:
        """The memory's numbers per sequence (H K V, or H 4K (K + V) at depth 2; + H V for gamma), again for the
        momentum and for the update batch's start weights (titans_grad_batch > 1)."""
        h, k, v = head_dims(cfg)
        size = h * k * v if cfg.titans_depth == 1 else h * DEEP_EXPANSION * k * (k + v)
        size += h * v if knob(cfg, "titans_residual") == "norm" else 0
        return size * (1 + bool(cfg.titans_momentum) + (knob(cfg, "titans_grad_batch") > 1))
