"""What the test-time-training mixers (`ttt_linear`, `titans`) share on top of MatrixMixer: a learned initial
memory W0 per head, and a delta-rule memory that starts from it, also at every packed document.

The kernel resets its state to zero at a segment change, but a document of a packed row must start from the
learned W0, as it does alone. The delta rule is affine in its state, S_t = P_t S_0 + (the zero-start state) with
P_t = A_t ... A_1 and A_t = e^{g_t} (I - beta_t k_t k_t^T) (symmetric), so with c_t = exp(sum of g since the
segment start) the matrix D_t = P_t - c_t I starts at zero and follows the delta rule with value -c_t k_t:
D_t = A_t D_{t-1} + beta_t k_t (-c_t k_t)^T. One kernel call on values [v; -c k] (a zero-reset K x (V + K) state)
then gives S_t^T q = o_v + W0^T (D_t^T q + c_t q). Without segment ids the kernel runs on V alone, from
`initial_state` = W0 broadcast over the batch (its backward returns the gradient to W0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

import pallas_kernels
from memlab.models.mixers.matrix_block import MatrixMixer, map_head_blocks


def segment_starts(segment_ids: jax.Array) -> jax.Array:
    """[B, T] bool: True where a new segment starts after the first token (the id changed)."""
    change = segment_ids[:, 1:] != segment_ids[:, :-1]
    return jnp.concatenate([jnp.zeros_like(change[:, :1]), change], axis=1)


def _decay_since_start(g: jax.Array | None, segment_ids: jax.Array, shape) -> tuple[jax.Array, jax.Array]:
    """log c_t through token t and through t - 1 (1 at a segment start), summing g [B, T, H] within each segment."""
    if g is None:
        zero = jnp.zeros(shape, jnp.float32)
        return zero, zero
    T = g.shape[1]
    start = jax.lax.cummax(jnp.where(segment_starts(segment_ids), jnp.arange(T), 0), axis=1)  # [B, T]
    through = jnp.cumsum(g, axis=1)
    before = through - g
    at_start = jnp.take_along_axis(before, start[:, :, None], axis=1)
    return through - at_start, before - at_start


def delta_from_init(q, k, v, beta, g, init, *, segment_ids=None, **options) -> tuple[jax.Array, jax.Array | None]:
    """pallas_kernels.delta_rule (scale 1) from the state `init` [B, H, K, V], which every segment starts from."""
    options.update(g=g, scale=1.0)
    if segment_ids is None:
        return pallas_kernels.delta_rule(q, k, v, beta, initial_state=init, **options)
    if options.get("return_final_state"):
        raise ValueError("delta_from_init returns no final state with segment ids")
    through, before = _decay_since_start(g, segment_ids, beta.shape)
    c = jnp.exp(before if options.get("read_before_write") else through)[..., None]
    values = jnp.concatenate([v, (-jnp.exp(through)[..., None] * k).astype(v.dtype)], axis=-1)
    o, _ = pallas_kernels.delta_rule(q, k, values, beta, segment_ids=segment_ids, **options)
    o_v, o_d = o[..., : v.shape[-1]], o[..., v.shape[-1] :].astype(jnp.float32)
    read = jnp.einsum("bthk,bhkv->bthv", o_d + c * q.astype(jnp.float32), init.astype(jnp.float32))
    return o_v + read.astype(o_v.dtype), None


def head_params(*params: jax.Array) -> list[jax.Array]:
    """Per-head parameters [H, ...] as [1, 1, H, ...], to enter `map_head_blocks` split over heads like q, k, v
    (a kernel that closed over them would see every head on a block of some); [0, 0] inside gives them back."""
    return [p[None, None] for p in params]


def learned_state(shape, rngs: nnx.Rngs, std: float = 0.02) -> nnx.Param:
    """A per-head learned initial memory [H, ...] ~ N(0, std^2)."""
    axes = ("heads",) + (None,) * (len(shape) - 1)
    return nnx.Param(std * jax.random.normal(rngs.params(), shape), out_sharding=axes)


class FastWeightMixer(MatrixMixer):
    """MatrixMixer's block with a learned initial memory `w0` [H, K, V] (S = W^T orientation) and a fixed read
    order `read_before`. Subclasses give the kernel's value (`_target`) and what a query reads (`_read`); a
    variant that is no delta rule (`scan` true) provides `_scan_memory`, `_scan_cache` and `_scan_step`."""

    delta, decay = True, False
    read_before = False
    scan = False

    def __init__(self, cfg, *, rngs: nnx.Rngs, dtype=jnp.float32):
        super().__init__(cfg, rngs=rngs, dtype=dtype)
        self.read_before_write = self.read_before  # fixed by the method, whatever model.matrix_read says
        self._init_memory(cfg, rngs)

    def _init_memory(self, cfg, rngs: nnx.Rngs) -> None:
        self.w0 = learned_state((self.heads, self.dk, self.dv), rngs)

    def initial_state(self) -> jax.Array:
        """W0 [H, K, V], what every sequence and packed document starts from."""
        return self.w0[...]

    def _target(self, q, k, v, g):
        return v

    def _read(self, q, o):
        return o

    def _op(self, q, k, v, beta, g, **options):
        """The delta rule from `initial_state` (every segment from it) -> (what q reads, final state)."""
        options["init"] = options.pop("initial_state")
        o, S = delta_from_init(
            q, k, self._target(q, k, v, g), beta.astype(q.dtype), g, read_before_write=self.read_before, **options
        )
        return self._read(q, o), S

    def _memory(self, q, k, v, beta, g, segment_ids):
        """The kernel over the whole sequence from W0 broadcast over the batch, on each (batch, heads) block."""

        def kernel(q, k, v, beta, g, segment_ids, w0):
            init = jnp.broadcast_to(w0[0], (q.shape[0], *w0.shape[2:]))
            options = dict(segment_ids=segment_ids, chunk_size=self.chunk_size, backend=self.backend)
            return self._op(q, k, v, beta, g, initial_state=init, **options)[0]

        return map_head_blocks(kernel, q, k, v, beta, g, segment_ids, *head_params(self.initial_state()))

    def __call__(self, x: jax.Array, *, positions: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
        if not self.scan:
            return super().__call__(x, positions=positions, segment_ids=segment_ids)
        q, k, v = self._qkv_parallel(x, segment_ids)
        return self._out(x, self._scan_memory(x, q, k, v, segment_ids))

    def init_cache(self, batch_size: int, max_len: int) -> dict:
        """The conv taps and the memory, W0 broadcast over the batch (the scan variants: their own carry)."""
        cache = super().init_cache(batch_size, max_len)
        if self.scan:
            return {"conv": cache["conv"], "state": self._scan_cache(batch_size)}
        return dict(cache, state=jnp.broadcast_to(self.initial_state(), cache["state"].shape).astype(jnp.float32))

    def step(self, x: jax.Array, cache: dict, *, position: jax.Array) -> tuple[jax.Array, dict]:
        if not self.scan:
            return super().step(x, cache, position=position)
        qkv, conv = self._qkv_step(x, cache["conv"])
        o, state = self._scan_step(x, *(y.astype(jnp.float32) for y in qkv), cache["state"], position)
        return self._out(x, o.astype(x.dtype)), {"conv": conv, "state": state}
