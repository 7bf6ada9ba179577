"""Causal multi-head softmax attention with RoPE (`attn`): the baseline mixer every claim is measured against.

`model.qkv_conv` adds a short causal convolution to the query, key and value projections (the short convs of
Gated DeltaNet and Mamba; "canon layers" in Allen-Zhu's Physics of LMs 4.1): a key then carries the token
before it, so associative recall needs one attention hop instead of an induction circuit built over two layers
(the MQAR rows of BENCHMARKS.md measure the difference). `model.copy_init` starts it as a copying lookup, as
the encoder-decoder families' attention (`layers.attention_projections`).

`model.attention_window` = W > 0 limits attention to windows of W tokens while the other mixers' matrix state
still spans the whole sequence (hybrids such as "attn,gdn"): `sliding` lets position p see positions p-W+1..p,
`block` the positions of its own block, floor(p/W)*W..p. Windows count the positions RoPE rotates by, which
restart at 0 in every packed document (data/packing.py), so blocks align to each document's start and the
segment mask still keeps documents apart.

Decoding keeps a KV cache of max_len slots, windowed or not (the window masks the old slots; a ring buffer of W
slots would hold the same keys in less memory).

`model.delta_mem` and `model.lora_rank` add adapters to the query and output projections (memlab.models.adapters):
δ-mem's reads of its online state (carried in the decoding cache too) and a stateless LoRA control. Their
parameters live under the mixer (`blocks/0/mixer/delta_mem/...`, `blocks/0/mixer/lora/...`).

The anchor: meta-llama/llama3's `Attention` @ a0940f9 (bias-free q, k, v, o projections, RoPE, softmax over
1 / sqrt(head dim) scores, a KV cache).

Deviations from the anchor:
- RoPE rotates the two halves of each head (x1, x2), the anchor rotates interleaved pairs (2i, 2i+1): the same
  rotation on permuted features, which the learned projections absorb. `model.rope_theta` 1e4 (the anchor 5e5).
- No grouped key/value heads (`n_kv_heads`).
- `model.qkv_conv`, `model.copy_init`, `model.attention_window` and the adapters are memlab's additions, off by
  default.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from memlab.models import adapters
from memlab.models.layers import ShortConv, attention_projections, rope
from memlab.registry import MIXERS

WINDOW_KINDS = ("sliding", "block")


def in_window(query_pos: jax.Array, key_pos: jax.Array, window: int, kind: str) -> jax.Array:
    """Whether a key at key_pos lies in the window of a query at query_pos (broadcasting); causality and
    documents are masked separately."""
    if kind == "sliding":
        return query_pos - key_pos < window
    return query_pos // window == key_pos // window


@MIXERS.register("attn")
class CausalSelfAttention(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs, dtype=jnp.float32):
        d, h = cfg.d_model, cfg.num_heads
        self.num_heads, self.head_dim, self.rope_theta, self.dtype = h, d // h, cfg.rope_theta, dtype
        self.q, self.k, self.v, self.o = attention_projections(
            d, rngs=rngs, dtype=dtype, copy_init=cfg.get("copy_init", False)
        )
        self.convs = nnx.List(
            [ShortConv(d, cfg.conv_kernel, rngs=rngs, dtype=dtype) for _ in range(3)] if cfg.qkv_conv else []
        )
        # .get: configs saved before the window knobs existed still load
        self.window, self.window_kind = cfg.get("attention_window", 0), cfg.get("attention_window_kind", "sliding")
        # .get: configs saved before the adapters existed have none
        self.delta_mem = adapters.DeltaMem(cfg, rngs=rngs, dtype=dtype) if cfg.get("delta_mem", "") else None
        self.lora = adapters.LoRA(cfg, rngs=rngs, dtype=dtype) if cfg.get("lora_rank", 0) else None
        self.init_adapters_from_backbone()

    def init_adapters_from_backbone(self) -> None:
        """δ-mem's base-slice W_dq, W_do from this layer's current q and o kernels (after a backbone is loaded)."""
        if self.delta_mem is not None:
            self.delta_mem.init_from_backbone(self.q.kernel[...], self.o.kernel[...])

    def _query(self, q, x, r):
        """The query projection plus the adapters' corrections (before RoPE)."""
        if self.delta_mem is not None:
            q = q + self.delta_mem.delta_q(r)
        return q if self.lora is None else q + self.lora.delta_q(x)

    def _output(self, out, r):
        """The output projection of the attention output [..., d] plus the adapters' corrections."""
        y = self.o(out)
        if self.delta_mem is not None:
            y = y + self.delta_mem.delta_o(r)
        return y if self.lora is None else y + self.lora.delta_o(out)

    @staticmethod
    def check(cfg) -> None:
        """ValueError for a window that is not a non-negative int or a window kind that is not known."""
        window, kind = cfg.get("attention_window", 0), cfg.get("attention_window_kind", "sliding")
        if isinstance(window, bool) or not isinstance(window, int) or window < 0:
            raise ValueError(f"model.attention_window={window!r} must be an int >= 0 (0 = unlimited causal attention)")
        if kind not in WINDOW_KINDS:
            raise ValueError(
                f"model.attention_window_kind={kind!r} is not accepted; choose one of {', '.join(WINDOW_KINDS)}"
            )

    def __call__(self, x: jax.Array, *, positions: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
        b, t, _ = x.shape
        split = lambda y: y.reshape(b, t, self.num_heads, self.head_dim)
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.convs:
            q, k, v = (conv(y, segment_ids) for conv, y in zip(self.convs, (q, k, v), strict=True))
        r = None if self.delta_mem is None else self.delta_mem.reads(x, positions=positions, segment_ids=segment_ids)
        q = rope(split(self._query(q, x, r)), positions, self.rope_theta)
        k = rope(split(k), positions, self.rope_theta)
        v = split(v)
        mask = None
        if segment_ids is not None:  # packed documents never attend across a boundary
            mask = segment_ids[:, :, None] == segment_ids[:, None, :]
        if self.window:
            near = in_window(positions[:, :, None], positions[:, None, :], self.window, self.window_kind)
            mask = near if mask is None else mask & near
        mask = None if mask is None else mask[:, None]  # [B, 1, T, T]: shared by the heads
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True)
        return self._output(out.reshape(b, t, -1), r)

    def init_cache(self, batch_size: int, max_len: int) -> dict:
        """Key and value caches [B, max_len, H, Dh] (zeros until written), the q/k/v conv taps, if any, and the
        δ-mem state, if any."""
        shape = (batch_size, max_len, self.num_heads, self.head_dim)
        return {
            "k": jnp.zeros(shape, self.dtype),
            "v": jnp.zeros(shape, self.dtype),
            "convs": [conv.init_cache(batch_size) for conv in self.convs],
            "delta_mem": None if self.delta_mem is None else self.delta_mem.init_cache(batch_size),
        }

    def step(self, x: jax.Array, cache: dict, *, position: jax.Array) -> tuple[jax.Array, dict]:
        """One token x [B, d] at `position` (a scalar shared by the batch) -> (y [B, d], cache): its key and value
        go to slot `position`, and its query attends to slots 0..position that lie in its window."""
        b = x.shape[0]
        pos = jnp.broadcast_to(position, (b, 1))
        split = lambda y: y.reshape(b, 1, self.num_heads, self.head_dim)
        q, k, v = self.q(x), self.k(x), self.v(x)
        convs = []
        if self.convs:
            stepped = [conv.step(y, buf) for conv, y, buf in zip(self.convs, (q, k, v), cache["convs"], strict=True)]
            (q, k, v), convs = zip(*stepped, strict=True)
        r, memory = None, None
        if self.delta_mem is not None:
            r, memory = self.delta_mem.step(x, cache["delta_mem"], position=position)
        q, k = rope(split(self._query(q, x, r)), pos, self.rope_theta), rope(split(k), pos, self.rope_theta)
        ks = jax.lax.dynamic_update_slice_in_dim(cache["k"], k.astype(cache["k"].dtype), position, axis=1)
        vs = jax.lax.dynamic_update_slice_in_dim(cache["v"], split(v).astype(cache["v"].dtype), position, axis=1)
        slots = jnp.arange(ks.shape[1])
        mask = slots <= position
        if self.window:
            mask = mask & in_window(position, slots, self.window, self.window_kind)
        out = jax.nn.dot_product_attention(q, ks, vs, mask=mask[None, None, None, :])
        return self._output(out.reshape(b, -1), r), {"k": ks, "v": vs, "convs": list(convs), "delta_mem": memory}

    @staticmethod
    def state_size(cfg, seq_len: int) -> int:
        """Decoding state per sequence after seq_len tokens, in numbers: the key and value cache (and the conv
        taps' last inputs, the δ-mem state)."""
        memory = adapters.DeltaMem.state_size(cfg) if cfg.get("delta_mem", "") else 0
        return 2 * seq_len * cfg.d_model + (3 * (cfg.conv_kernel - 1) * cfg.d_model if cfg.qkv_conv else 0) + memory

    @staticmethod
    def forward_flops_per_token(cfg, seq_len: int) -> float:
        """Projections (4 d^2 MACs) plus scores and weighted sum over all T keys (dense kernels compute the
        full T x T product and mask it, so that is what is counted), plus the adapters."""
        d = cfg.d_model
        convs = 3 * ShortConv.forward_flops_per_token(d, cfg.conv_kernel) if cfg.qkv_conv else 0.0
        memory = adapters.DeltaMem.forward_flops_per_token(cfg, seq_len) if cfg.get("delta_mem", "") else 0.0
        lora = adapters.LoRA.forward_flops_per_token(cfg) if cfg.get("lora_rank", 0) else 0.0
        return 2.0 * 4 * d * d + 2.0 * 2 * seq_len * d + convs + memory + lora
