"""Test-time-training mixers (ttt_linear, titans) against independent token-serial references of their inner
learning rules, their learned initial memory (packed documents start from it; its gradient through the kernel),
their knob checks and accounting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memlab.models import build_model, count_params
from memlab.models.mixers import MIXERS
from memlab.models.mixers.fast_weights import delta_from_init
from memlab.models.mixers.titans import Titans
from memlab.models.mixers.ttt_linear import TTTLinear, minibatch_ttt

B, T, H, K = 2, 11, 2, 4
# memlab's earlier ttt_linear block
TTT_MATRIX = ("model.ttt_inputs=matrix", "model.ttt_post_norm=rms_head", "model.ttt_lr_bias=False")
# memlab's earlier titans: the linear memory on the delta-rule kernel, read before the write
TITANS_LINEAR = (
    "model.titans_depth=1",
    "model.titans_momentum=False",
    "model.titans_read=before",
    "model.titans_loss=half_sum",
    "model.titans_grad_batch=1",
    "model.titans_residual=none",
    "model.titans_block=matrix",
    "model.titans_init=normal",
)


def _inputs(seed=0, V=K):
    ks = jax.random.split(jax.random.key(seed), 6)
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    q, k = unit(jax.random.normal(ks[0], (B, T, H, K))), unit(jax.random.normal(ks[1], (B, T, H, K)))
    v = jax.random.normal(ks[2], (B, T, H, V))
    rate = jax.nn.sigmoid(jax.random.normal(ks[3], (B, T, H)))
    alpha = 0.3 * jax.nn.sigmoid(jax.random.normal(ks[4], (B, T, H)))
    w0 = 0.3 * jax.random.normal(ks[5], (H, V, K))  # W [V, K]: the inner model's weight, W k
    return q, k, v, rate, alpha, w0


def test_delta_ttt_is_one_gradient_step_per_token_on_the_inner_loss():
    """ttt_linear's kernel op against a numpy GD loop on 1/2 ||k + W k - v||^2, reading k + W q after the step."""
    q, k, v, eta, _, w0 = _inputs()
    mixer = _mixer(TTTLinear)
    init = jnp.broadcast_to(jnp.swapaxes(w0, 1, 2), (B, H, K, K))
    got, S = mixer._op(q, k, v, eta, None, initial_state=init, return_final_state=True, backend="chunked", chunk_size=4)
    q, k, v, eta, W = map(np.asarray, (q, k, v, eta, jnp.broadcast_to(w0, (B, H, K, K))))
    W, want = W.copy(), np.zeros_like(q)
    for t in range(T):
        for b in range(B):
            for h in range(H):
                kt = k[b, t, h]
                grad = np.outer(kt + W[b, h] @ kt - v[b, t, h], kt)
                W[b, h] -= eta[b, t, h] * grad
                want[b, t, h] = q[b, t, h] + W[b, h] @ q[b, t, h]
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)
    np.testing.assert_allclose(np.asarray(S), np.swapaxes(W, 2, 3), atol=2e-5)


def _layer_norm(z, gamma, beta):
    mu, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
    return gamma * (z - mu) / jnp.sqrt(var + 1e-6) + beta


@pytest.mark.parametrize("size", [4, 16])
def test_minibatch_ttt_equals_per_minibatch_gradients_at_the_minibatch_start(size):
    """The dual form against explicit per-mini-batch GD: grads of 1/2 ||LN(W k + b) - (v - k)||^2 at the
    mini-batch-start weights (jax.grad per token), token t read with W_0 - sum_{s <= t} eta_s grad_s."""
    q, k, v, eta, _, w0 = _inputs(1)
    ks = jax.random.split(jax.random.key(7), 3)
    b0 = 0.1 * jax.random.normal(ks[0], (H, K))
    gamma, beta = 1 + 0.1 * jax.random.normal(ks[1], (H, K)), 0.1 * jax.random.normal(ks[2], (H, K))
    s0 = jnp.swapaxes(w0, 1, 2)  # [H, K, V]
    got = minibatch_ttt(q, k, v, eta, None, s0, b0, gamma, beta, size)

    def loss(W, c, kt, target, h):
        return 0.5 * jnp.sum((_layer_norm(W @ kt + c, gamma[h], beta[h]) - target) ** 2)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=4)
    want = np.zeros((B, T, H, K))
    for b in range(B):
        for h in range(H):
            W, c = np.asarray(w0[h]), np.asarray(b0[h])
            for start in range(0, T, size):
                W_now, c_now = W.copy(), c.copy()
                for t in range(start, min(start + size, T)):
                    gW, gc = grad(W, c, k[b, t, h], v[b, t, h] - k[b, t, h], h)
                    W_now, c_now = W_now - eta[b, t, h] * gW, c_now - eta[b, t, h] * gc
                    want[b, t, h] = _layer_norm(W_now @ q[b, t, h] + c_now, gamma[h], beta[h])
                W, c = W_now, c_now
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)


def _titans_direct(q, k, v, theta, alpha, w0, momentum=None):
    """W <- (1 - alpha) W + S, S = eta S - theta (W k - v) k^T (momentum None: S = -theta grad, i.e.
    W [(1 - alpha) I - theta k k^T] + theta v k^T); reads W_{t-1} q_t."""
    out = np.zeros(v.shape)
    for b in range(B):
        for h in range(H):
            W, S = np.asarray(w0[h]).copy(), np.zeros(w0.shape[1:])
            for t in range(T):
                kt, vt = k[b, t, h], v[b, t, h]
                out[b, t, h] = W @ q[b, t, h]
                grad = np.outer(W @ kt - vt, kt)
                S = (0.0 if momentum is None else momentum[b, t, h]) * S - theta[b, t, h] * grad
                W = (1 - alpha[b, t, h]) * W + S
    return out


def _mixer(cls, *overrides):
    """A mixer with H heads of dim K."""
    from memlab.config import load_config
    from tests.conftest import TINY
    from tests.helpers import ROOT

    sizes = (f"model.d_model={H * K}", f"model.num_heads={H}")
    cfg = load_config(ROOT / "experiments" / "mqar.py", [*TINY, *sizes, *overrides]).model
    return cls(cfg, rngs=nnx.Rngs(0))


def test_titans_reparametrisation_equals_the_direct_scan():
    q, k, v, theta, alpha, w0 = _inputs(2)
    g = jnp.log1p(-alpha)
    mixer = _mixer(Titans, *TITANS_LINEAR)
    init = jnp.broadcast_to(jnp.swapaxes(w0, 1, 2), (B, H, K, K))
    got, _ = mixer._op(q, k, v, theta / (1 - alpha), g, initial_state=init, backend="chunked", chunk_size=4)
    want = _titans_direct(*map(np.asarray, (q, k, v, theta, alpha, w0)))
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)


def test_titans_momentum_scan_equals_the_direct_scan():
    """The token-serial scan with momentum (inputs given as the mixer's gates)."""
    q, k, v, theta, alpha, w0 = _inputs(3)
    eta = jax.nn.sigmoid(jax.random.normal(jax.random.key(9), (B, T, H)))
    mixer = _mixer(Titans, *TITANS_LINEAR, "model.titans_momentum=True")
    mixer.w0[...] = jnp.swapaxes(w0, 1, 2)
    mixer._titans_gates = lambda x: (theta, jnp.log1p(-alpha), eta)
    got = mixer._scan_memory(None, q, k, v, None)
    want = _titans_direct(*map(np.asarray, (q, k, v, theta, alpha, w0)), momentum=np.asarray(eta))
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name, read_before", [("ttt_linear", False), ("titans", True)])
def test_gradient_to_the_learned_initial_state_flows_through_the_kernel(name, read_before):
    """d loss / d W0 through chunked (initial_state; and the packed-document form) equals the reference scan's."""
    q, k, v, beta, alpha, w0 = _inputs(4)
    g = jnp.log1p(-alpha) if read_before else None
    seg = jnp.array([[0] * 5 + [1] * 6, [0] * 11])

    def loss(w0, backend, segment_ids):
        init = jnp.broadcast_to(w0, (B, H, K, K))
        o, _ = delta_from_init(
            q,
            k,
            v,
            beta,
            g,
            init,
            segment_ids=segment_ids,
            read_before_write=read_before,
            backend=backend,
            chunk_size=4,
        )
        return jnp.sum(o * v)

    for segment_ids in (None, seg):
        ref = jax.grad(loss)(w0, "reference", segment_ids)
        assert np.abs(np.asarray(ref)).max() > 1e-2
        for backend in ("chunked", "pallas"):
            np.testing.assert_allclose(jax.grad(loss)(w0, backend, segment_ids), ref, atol=1e-4)


def test_packed_documents_start_from_the_learned_initial_state():
    """delta_from_init with segment ids equals running each document alone from W0 (reference scan)."""
    q, k, v, beta, alpha, w0 = _inputs(5)
    init = jnp.broadcast_to(w0, (B, H, K, K))
    seg = jnp.array([[0] * 3 + [1] * 5 + [2] * 3, [4] * 7 + [5] * 4])
    for read_before in (False, True):
        g = jnp.log1p(-alpha)
        kw = dict(read_before_write=read_before, chunk_size=4)
        packed, _ = delta_from_init(q, k, v, beta, g, init, segment_ids=seg, backend="chunked", **kw)
        for b, bounds in ((0, (0, 3, 8, 11)), (1, (0, 7, 11))):
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=False):
                part = lambda x: x[b : b + 1, lo:hi]  # noqa: B023
                alone, _ = delta_from_init(*map(part, (q, k, v, beta, g)), init[:1], backend="reference", **kw)
                np.testing.assert_allclose(packed[b : b + 1, lo:hi], alone, atol=2e-5)


@pytest.mark.parametrize(
    "overrides",
    [
        ("model.mixers=ttt_linear", "model.ttt_minibatch=4"),
        pytest.param(("model.mixers=ttt_linear", "model.ttt_minibatch=4", *TTT_MATRIX), marks=pytest.mark.slow),
        ("model.mixers=titans",),
        pytest.param(("model.mixers=titans", "model.titans_grad_batch=3", "model.num_heads=1"), marks=pytest.mark.slow),
        ("model.mixers=titans", *TITANS_LINEAR, "model.titans_momentum=True"),
        ("model.mixers=titans", *TITANS_LINEAR, "model.titans_depth=2", "model.titans_residual=plain"),
        ("model.mixers=titans", *TITANS_LINEAR[:2], "model.titans_grad_batch=1", "model.titans_residual=none"),
    ],
    ids=[
        "ttt-anchor",
        "ttt-matrix",
        "titans-anchor",
        "titans-batch3-1head",
        "titans-momentum",
        "titans-deep",
        "titans-kernel-anchor-block",
    ],  # fmt: skip
)
def test_scan_variants_decode_like_the_parallel_forward_and_reset_per_document(tiny_config, overrides):
    from tests.helpers import decoded_logits, logits_of

    model = build_model(tiny_config(*overrides).model, seed=0)
    tokens = jax.random.randint(jax.random.key(3), (2, 10), 0, 64)
    parallel = logits_of(model, {"inputs": tokens})
    np.testing.assert_allclose(decoded_logits(model, tokens), parallel, atol=2e-5)
    seg = jnp.array([[0] * 4 + [1] * 6])
    packed = logits_of(
        model, {"inputs": tokens[:1], "segment_ids": seg, "positions": jnp.array([[*range(4), *range(6)]])}
    )
    np.testing.assert_allclose(packed[:, 4:], logits_of(model, {"inputs": tokens[:1, 4:]}), atol=2e-5)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (("model.mixers=ttt_linear", "model.ttt_variant=lstsq"), "ttt_variant"),
        (("model.mixers=ttt_linear", "model.ttt_base_lr=0.0"), "ttt_base_lr"),
        (("model.mixers=ttt_linear", "model.ttt_minibatch=0"), "ttt_minibatch"),
        (("model.mixers=ttt_linear", "model.matrix_expand_v=2"), "matrix_expand_v"),
        (("model.mixers=ttt_linear", "model.matrix_read=before"), "matrix_read"),
        (("model.mixers=titans", "model.titans_depth=3"), "titans_depth"),
        (("model.mixers=titans", "model.titans_max_lr=-1.0"), "titans_max_lr"),
        (("model.mixers=titans", "model.titans_depth=2", "model.matrix_expand_v=2"), "matrix_expand_v"),
        (("model.mixers=titans", "model.titans_read=later"), "titans_read"),
        (("model.mixers=titans", "model.titans_grad_batch=-1"), "titans_grad_batch"),
        (("model.mixers=titans", "model.titans_block=mlp"), "titans_block"),
        (("model.mixers=ttt_linear", "model.ttt_inputs=qkv"), "ttt_inputs"),
        (("model.mixers=ttt_linear", "model.ttt_post_norm=batch"), "ttt_post_norm"),
    ],
)
def test_bad_knobs_are_rejected(tiny_config, overrides, match):
    from memlab.config import ConfigError

    with pytest.raises((ValueError, ConfigError), match=match):
        build_model(tiny_config(*overrides).model, seed=0)


@pytest.mark.parametrize(
    "overrides, extra, state",
    [
        (
            ("model.mixers=ttt_linear", "model.ttt_variant=delta", *TTT_MATRIX),
            lambda d, h, k: h * k * k,
            lambda h, k: h * k * k,
        ),
        (("model.mixers=titans", *TITANS_LINEAR), lambda d, h, k: h * k * k + d * h + h, lambda h, k: h * k * k),
        (
            ("model.mixers=titans", *TITANS_LINEAR, "model.titans_momentum=True", "model.titans_depth=2"),
            lambda d, h, k: 8 * h * k * k + 2 * (d * h + h),
            lambda h, k: 2 * 8 * h * k * k,
        ),
    ],
    ids=["ttt-delta", "titans-linear", "titans-deep-momentum"],
)
def test_param_count_and_state_size(tiny_config, overrides, extra, state):
    """Parameters are deltanet's plus the learned initial memory (and titans' alpha, eta projections)."""
    cfg = tiny_config(*overrides).model
    base = count_params(build_model(tiny_config("model.mixers=deltanet").model, seed=0))["params"]
    h, k = cfg.num_heads, cfg.d_model // cfg.num_heads
    assert count_params(build_model(cfg, seed=0))["params"] == base + cfg.num_layers * extra(cfg.d_model, h, k)
    assert MIXERS.get(cfg.mixers).state_size(cfg, 4096) == state(h, k)


def test_anchor_param_counts(tiny_config):
    """The anchors' layers, counted by hand: titans (two RMSNorms, q k v, lr / momentum / decay with bias, the
    retrieve gate, the head projection, one shared M_0 = W1, W2, gamma) and ttt_linear (the shared q/k projection,
    two convs with bias, v, lr with bias, W0, b0, the inner LN, the post LayerNorm, the gate, the output)."""
    for name, layer in (
        ("titans", lambda d, h, k: 2 * d + 3 * d * d + 3 * (d * h + h) + d * h + d * d + 8 * k * k + k),
        (
            "ttt_linear",
            lambda d, h, k: 2 * d * d + 2 * (4 * d + d) + d * h + h + h * k * k + 3 * h * k + 2 * d + 2 * d * d,
        ),
    ):
        cfg = tiny_config(f"model.mixers={name}").model
        attn = count_params(build_model(tiny_config("model.mixers=attn").model, seed=0))["params"]
        d, h = cfg.d_model, cfg.num_heads
        attn_layer = 4 * d * d
        got = count_params(build_model(cfg, seed=0))["params"]
        assert got == attn + cfg.num_layers * (layer(d, h, d // h) - attn_layer), name


def test_titans_kernel_form_equals_its_scan():
    """The linear memory on the delta-rule kernel (mean loss: beta' = 2 theta / V) equals the token-serial scan."""
    mixer = _mixer(Titans, *TITANS_LINEAR[:2], "model.titans_grad_batch=1", "model.titans_residual=none")
    assert not mixer.scan
    x = jax.random.normal(jax.random.key(5), (B, T, H * K))
    positions = jnp.broadcast_to(jnp.arange(T), (B, T))
    kernel = mixer(x, positions=positions)
    mixer.scan = True
    np.testing.assert_allclose(mixer(x, positions=positions), kernel, atol=2e-5)
