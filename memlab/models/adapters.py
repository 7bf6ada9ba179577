"""Adapters on the attention layers of a (frozen) LM: δ-mem online memory and a LoRA control of the same size.

**δ-mem** (declare-lab/delta-Mem; /work/shared/research/memory-families.md C.1). Each attn layer gets an r x r
state per state head (n_s = 1 for "tsw"/"ssw", 4 for "msw"), fp32, zero at the start of every sequence and
document. From h_t, the attention input after the block's norm:

    q~ = normalize(tanh(W_mq h)), k~ = normalize(tanh(W_mk h)) per state head; v~ = W_mv h
    beta = sigmoid(z), z = W_beta h + b_beta (one beta per ROW of S); lambda = 1 - beta
    read r_t = S_{t-1} q~_t (before the write)
    "standard":       S_t = diag(lambda) S - diag(beta) (S k~) k~^T + diag(beta) v~ k~^T
    "lambda_outside": S_t = diag(lambda) (S - diag(beta) (S k~) k~^T) + diag(beta) v~ k~^T
    Delta q = (alpha/r) W_dq r added to the query projection before RoPE; Delta o = (alpha/r) W_do r added after
    the output projection.

Row i of S evolves on its own, so the state runs through `pallas_kernels.delta_rule` with one kernel head per row
(H = n_s r, K = r, V = 1; q~, k~ broadcast over the rows of their state head), g = log lambda = -softplus(z), and
for "standard" beta' = beta / lambda = exp(z), v' = lambda v~ (the kernel erases lambda beta'; this makes it beta),
for "lambda_outside" beta' = beta, v' = v~; read-before-write, scale 1.

"tsw" writes at every token. "ssw" writes once per block window of W = model.attention_window tokens, from the
window's mean hidden state: the write sits at the window's last token (every other token writes nothing: beta' =
0, g = 0), so each token reads, with its own q~, the state after the windows before its own, in the same kernel
call as "tsw". Windows follow the positions, as block attention's do, and restart with each packed document.

W_dq and W_do start as the "base slice" of the backbone (the first n_s r input rows of its q / o kernels, each
row L2-normalised, x 0.05: the anchor's `base_slice_fixed`, in memlab's [d_in, d_out] orientation), so the
controller gets gradients from the first write (with "zero" they would start at 0 and it would get none), while a
zero state still reads 0 and leaves the backbone exact. The slice must come from the loaded backbone:
`DeltaMem.init_from_backbone`, which memlab.train.loop calls after `train.init_from`.

**LoRA** (`model.lora_rank` > 0): Delta q = (alpha/r) x A_q B_q and Delta o = (alpha/r) y A_o B_o (y: the attention
output the o projection takes), B zero-initialised so that it starts as the backbone; stateless.

δ-mem's anchor: declare-lab/delta-Mem @ 5cd5d91, `DeltaMemAttention`.

Deviations from the anchor:
- `model.delta_mem="ssw"` writes once per block window of `model.attention_window` tokens; the anchor's SSW writes
  once per chat message (`message_mean`), and a forward's tokens read the state from before its writes. memlab's
  tasks have no messages: windows stand in for them.
- The backbone is memlab's LM (RoPE, no q norm): Delta q enters before RoPE (the anchor's Qwen3 / SmolLM3: before
  q_norm and RoPE).
- Knobs at the anchor's settings: `delta_mem_rank` 8, `delta_mem_alpha` 16, `delta_mem_beta_bias` -1.5,
  `delta_mem_update` "standard" ("lambda_outside" is the anchor's other mode), `delta_mem_init` "base_slice"
  ("zero" is the anchor's `output_init=zero`). `delta_mem_read="zero"` and LoRA are memlab's controls.
- Not built: the anchor's delta heads on k and v (zero and frozen in its released setting), its `no_lambda` mode, an
  uncoupled lambda, a trainable delta scale, the RMSNorm on Delta o, memory partitions and global memories.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

import pallas_kernels
from memlab.models.layers import dense, torch_linear_init
from memlab.models.mixers.matrix_block import kernel_flops_per_token, l2norm, map_head_blocks

STATE_HEADS = {"tsw": 1, "ssw": 1, "msw": 4}  # model.delta_mem -> n_s ("" = off)
UPDATES = ("standard", "lambda_outside")
INITS = ("base_slice", "zero")
READS = ("state", "zero")  # model.delta_mem_read: "zero" is the ablation that reads nothing from the state
BETA_BIAS = -1.5  # beta_0 = sigmoid(-1.5) = 0.18 (C.2): lambda^t keeps 0.82^t of a write t tokens back
BASE_SLICE_GAIN = 0.05


def _positive(cfg, key: str, default, kind) -> None:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        raise ValueError(f"model.{key}={value!r} must be a positive {'int' if kind is int else 'number'}")


def check(cfg) -> None:
    """ValueError (naming the key, the value and what is accepted) for an unknown δ-mem kind, update or init, a
    rank or alpha that is not positive, base-slice rows the backbone lacks, "ssw" without block attention windows,
    or adapters without an attn layer."""
    kind = cfg.get("delta_mem", "")
    if kind not in ("", *STATE_HEADS):
        raise ValueError(f"model.delta_mem={kind!r} is not accepted; choose one of '' (off), {', '.join(STATE_HEADS)}")
    lora = cfg.get("lora_rank", 0)
    if isinstance(lora, bool) or not isinstance(lora, int) or lora < 0:
        raise ValueError(f"model.lora_rank={lora!r} must be an int >= 0 (0 = no LoRA)")
    if lora:
        _positive(cfg, "lora_alpha", 16.0, (int, float))
    if (kind or lora) and "attn" not in cfg.mixers.split(","):
        raise ValueError(f"model.delta_mem={kind!r} / model.lora_rank={lora} adapt attn layers; model.mixers has none")
    if not kind:
        return
    _positive(cfg, "delta_mem_rank", 8, int)
    _positive(cfg, "delta_mem_alpha", 16.0, (int, float))
    choices = (
        ("delta_mem_update", UPDATES, "standard"),
        ("delta_mem_init", INITS, "base_slice"),
        ("delta_mem_read", READS, "state"),
    )
    for key, accepted, default in choices:
        if cfg.get(key, default) not in accepted:
            raise ValueError(f"model.{key}={cfg.get(key)!r} is not accepted; choose one of {', '.join(accepted)}")
    width = STATE_HEADS[kind] * cfg.get("delta_mem_rank", 8)
    if cfg.get("delta_mem_init", "base_slice") == "base_slice" and width > cfg.d_model:
        raise ValueError(
            f"model.delta_mem_init='base_slice' takes the first {width} rows (state heads x model.delta_mem_rank) of "
            f"the q kernel, but model.d_model={cfg.d_model}; lower the rank or use model.delta_mem_init='zero'"
        )
    if kind == "ssw" and (cfg.get("attention_window_kind", "sliding") != "block" or not cfg.get("attention_window", 0)):
        raise ValueError(
            f"model.delta_mem='ssw' writes once per attention block window: it needs model.attention_window_kind="
            f"'block' (got {cfg.get('attention_window_kind', 'sliding')!r}) and model.attention_window > 0 "
            f"(got {cfg.get('attention_window', 0)!r})"
        )


def kernel_inputs(q, k, v, z, update: str, write=None):
    """Per-state-head q~, k~, v~, z [..., n_s, r] -> the delta_rule inputs of one head per state row: q, k
    [..., n_s r, r], v [..., n_s r, 1], beta' and g [..., n_s r] (see the module docstring). `write` [...] (bool)
    masks the tokens that write (others: beta' = 0, g = 0, a no-op)."""
    n_s, r = q.shape[-2:]
    rows = lambda x: jnp.repeat(x, r, axis=-2)  # state head s's vector for each of its r rows
    z = z.reshape(*z.shape[:-2], n_s * r)
    g = -jax.nn.softplus(z)
    v = v.reshape(*v.shape[:-2], n_s * r)
    if update == "standard":
        beta, v = jnp.exp(z), jax.nn.sigmoid(-z) * v
    else:
        beta = jax.nn.sigmoid(z)
    if write is not None:
        beta, g = (jnp.where(write[..., None], x, 0.0) for x in (beta, g))
    return rows(q), rows(k), v[..., None], beta, g


def read_and_write(q, k, v, beta, g, **options):
    """delta_rule with δ-mem's read (S_{t-1} q~, unscaled) -> (reads [B, T, n_s r], state or None)."""
    o, state = pallas_kernels.delta_rule(q, k, v, beta, g=g, scale=1.0, read_before_write=True, **options)
    return o[..., 0], state


def window_ends(positions: jax.Array, segment_ids: jax.Array | None, window: int) -> tuple[jax.Array, jax.Array]:
    """(starts, ends) [B, T] bool: the first and last token of each block window (positions // window), cut at
    document boundaries and at the ends of the sequence."""
    block = positions // window
    new = block[:, 1:] != block[:, :-1]
    if segment_ids is not None:
        new = new | (segment_ids[:, 1:] != segment_ids[:, :-1])
    edge = jnp.ones_like(new[:, :1])
    return jnp.concatenate([edge, new], axis=1), jnp.concatenate([new, edge], axis=1)


def window_means(h: jax.Array, starts: jax.Array) -> jax.Array:
    """Mean of h [B, T, d] over each token's whole window (windows: runs that begin at `starts`), in fp32."""
    t = h.shape[1]
    ids = jnp.cumsum(starts, axis=1) - 1

    def one(x, i):
        sums = jax.ops.segment_sum(x, i, num_segments=t)
        counts = jax.ops.segment_sum(jnp.ones_like(i, jnp.float32), i, num_segments=t)
        return sums[i] / counts[i][:, None]

    return jax.vmap(one)(h.astype(jnp.float32), ids)


class DeltaMem(nnx.Module):
    """One attn layer's δ-mem: `reads` (parallel) / `step` (one token from the cache) give r_t, `delta_q` and
    `delta_o` what it adds to the query and the output."""

    def __init__(self, cfg, *, rngs: nnx.Rngs, dtype=jnp.float32):
        d, r = cfg.d_model, cfg.get("delta_mem_rank", 8)
        kind = cfg.get("delta_mem", "")
        self.heads, self.rank, self.dtype = STATE_HEADS[kind], r, dtype
        self.scale = cfg.get("delta_mem_alpha", 16.0) / r
        self.update = cfg.get("delta_mem_update", "standard")
        self.base_slice = cfg.get("delta_mem_init", "base_slice") == "base_slice"
        self.window = cfg.attention_window if kind == "ssw" else 0
        self.zero_read = cfg.get("delta_mem_read", "state") == "zero"  # the ablation: writes kept, reads of 0
        self.backend, self.chunk_size = cfg.get("matrix_backend", "auto"), cfg.get("matrix_chunk_size", 64)
        width = self.heads * r
        proj = lambda **kw: dense(d, width, ("embed", None), rngs=rngs, dtype=dtype, **kw)  # tiny: replicated
        self.mq, self.mk, self.mv = (proj(init=torch_linear_init) for _ in range(3))
        self.beta = proj(
            init=nnx.initializers.zeros_init(),
            use_bias=True,
            bias_init=nnx.initializers.constant(cfg.get("delta_mem_beta_bias", BETA_BIAS)),
        )
        zeros = nnx.initializers.zeros_init()
        self.dq = dense(width, d, (None, "heads"), rngs=rngs, dtype=dtype, init=zeros)
        self.do = dense(width, d, (None, "embed"), rngs=rngs, dtype=dtype, init=zeros)

    def init_from_backbone(self, q_kernel: jax.Array, o_kernel: jax.Array) -> None:
        """W_dq, W_do <- base slices of the backbone's q and o kernels [d_in, d_out] (no-op for the "zero" init)."""
        if not self.base_slice:
            return
        width = self.heads * self.rank
        for proj, kernel in ((self.dq, q_kernel), (self.do, o_kernel)):
            rows = kernel[:width].astype(jnp.float32)
            proj.kernel[...] = BASE_SLICE_GAIN * rows / jnp.linalg.norm(rows, axis=-1, keepdims=True)

    def _split(self, y):
        return y.astype(jnp.float32).reshape(*y.shape[:-1], self.heads, self.rank)

    def _query(self, h):
        return l2norm(jnp.tanh(self._split(self.mq(h))))

    def _writes(self, h):
        """k~, v~, z [..., n_s, r] in fp32 of the hidden state(s) that write."""
        return l2norm(jnp.tanh(self._split(self.mk(h)))), self._split(self.mv(h)), self._split(self.beta(h))

    def reads(self, h: jax.Array, *, positions: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
        """r_t [B, T, n_s r] (fp32) of every token of h [B, T, d]; the state starts at zero in every document."""
        write = None
        if self.window:
            starts, write = window_ends(positions, segment_ids, self.window)
            h_write = jnp.where(write[..., None], window_means(h, starts), 0.0).astype(h.dtype)
        k, v, z = self._writes(h_write if self.window else h)
        beta = jax.nn.sigmoid(z)  # the write regulariser's mean beta, over the tokens that write
        writing = jnp.ones(beta.shape[:2], jnp.float32) if write is None else write.astype(jnp.float32)
        self.sow(nnx.Intermediate, "beta_mean", (beta.mean((-1, -2)) * writing).sum() / jnp.maximum(writing.sum(), 1))
        if self.zero_read:
            return jnp.zeros((*h.shape[:-1], self.heads * self.rank), jnp.float32)
        inputs = kernel_inputs(self._query(h), k, v, z, self.update, write)

        def kernel(q, k, v, beta, g, segment_ids):
            options = dict(segment_ids=segment_ids, chunk_size=self.chunk_size, backend=self.backend)
            return read_and_write(q, k, v, beta, g, **options)[0][..., None]

        return map_head_blocks(kernel, *inputs, segment_ids)[..., 0]

    def init_cache(self, batch_size: int) -> dict:
        """The fp32 state [B, n_s r, r, 1] (kernel layout) and, for "ssw", the running sum of the window's h."""
        width = self.heads * self.rank
        cache = {"state": jnp.zeros((batch_size, width, self.rank, 1), jnp.float32)}
        if self.window:
            cache["sum"] = jnp.zeros((batch_size, self.mq.kernel.shape[0]), jnp.float32)
        return cache

    def step(self, h: jax.Array, cache: dict, *, position: jax.Array) -> tuple[jax.Array, dict]:
        """One token h [B, d] at `position` -> (r_t [B, n_s r], cache): the op on a length-1 sequence from the
        cached state (the reference backend, cheapest for one token); "ssw" writes only at a window's last token,
        from the mean of its hidden states."""
        new = {}
        write = None
        if self.window:
            total = cache["sum"] + h.astype(jnp.float32)
            end = (position + 1) % self.window == 0
            write = jnp.broadcast_to(end, h.shape[:1])[:, None]
            new["sum"] = jnp.where(end, 0.0, total)
            h_write = jnp.where(end, total / (position % self.window + 1), 0.0).astype(h.dtype)
        inputs = kernel_inputs(
            self._query(h)[:, None],
            *(y[:, None] for y in self._writes(h_write if self.window else h)),
            self.update,
            write,
        )
        r, new["state"] = read_and_write(
            *inputs, initial_state=cache["state"], return_final_state=True, backend="reference"
        )
        return (jnp.zeros_like(r[:, 0]) if self.zero_read else r[:, 0]), new

    def delta_q(self, r: jax.Array) -> jax.Array:
        return self.scale * self.dq(r.astype(self.dtype))

    def delta_o(self, r: jax.Array) -> jax.Array:
        return self.scale * self.do(r.astype(self.dtype))

    @staticmethod
    def forward_flops_per_token(cfg, seq_len: int) -> float:
        """Controller projections (q~, k~, v~, z) 2 d (4 n_s r), Delta q and Delta o 2 (2 n_s r d), and the kernel of
        H = n_s r heads (K = r, V = 1) over every token ("ssw" too: its non-writing tokens still run through it)."""
        d, r = cfg.d_model, cfg.get("delta_mem_rank", 8)
        width = STATE_HEADS[cfg.delta_mem] * r
        chunk = min(cfg.get("matrix_chunk_size", 64), seq_len)
        return 2.0 * d * 4 * width + 2.0 * 2 * width * d + kernel_flops_per_token(width, r, 1, chunk, True)

    @staticmethod
    def state_size(cfg) -> int:
        """n_s r r numbers (the "ssw" window sum of d numbers excluded, as the conv taps of other mixers)."""
        r = cfg.get("delta_mem_rank", 8)
        return STATE_HEADS[cfg.delta_mem] * r * r


class LoRA(nnx.Module):
    """Rank-r corrections of the q and o projections; B = 0 at the start, so the layer starts as the backbone."""

    def __init__(self, cfg, *, rngs: nnx.Rngs, dtype=jnp.float32):
        d, r = cfg.d_model, cfg.lora_rank
        self.scale = cfg.get("lora_alpha", 16.0) / r
        zeros = nnx.initializers.zeros_init()
        self.q_a = dense(d, r, ("embed", None), rngs=rngs, dtype=dtype, init=torch_linear_init)
        self.q_b = dense(r, d, (None, "heads"), rngs=rngs, dtype=dtype, init=zeros)
        self.o_a = dense(d, r, ("heads", None), rngs=rngs, dtype=dtype, init=torch_linear_init)
        self.o_b = dense(r, d, (None, "embed"), rngs=rngs, dtype=dtype, init=zeros)

    def delta_q(self, x: jax.Array) -> jax.Array:
        return self.scale * self.q_b(self.q_a(x))

    def delta_o(self, y: jax.Array) -> jax.Array:
        return self.scale * self.o_b(self.o_a(y))

    @staticmethod
    def forward_flops_per_token(cfg) -> float:
        return 2.0 * 4 * cfg.d_model * cfg.lora_rank
