"""The default `titans` and `ttt_linear` layers against float64 transcriptions of their anchors' layers
(lucidrains/titans-pytorch NeuralMemory at its defaults, chunk size 1; test-time-training/ttt-lm-jax TTTLinear):
outputs, decoding and every parameter's gradient. The transcriptions follow the anchors' own organisation (all
per-token gradients first, then the momentum and decay scans; the per-mini-batch dual form), not memlab's, and carry
only the deviations the modules list (L2-normalised keys instead of 1 / head_dim, no token index, no RoPE)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memlab.models.mixers.titans import Titans
from memlab.models.mixers.ttt_linear import TTTLinear

B, T, H, K = 2, 8, 2, 4
D = H * K


def _mixer(cls, *overrides):
    from memlab.config import load_config
    from tests.helpers import ROOT, TINY

    sizes = (f"model.d_model={D}", f"model.num_heads={H}")
    cfg = load_config(ROOT / "experiments" / "mqar.py", [*TINY, *sizes, *overrides]).model
    mixer = cls(cfg, rngs=nnx.Rngs(0))
    graph, state = nnx.split(mixer)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    noisy = [p + 0.2 * jax.random.normal(key, p.shape) for p, key in zip(leaves, keys, strict=True)]
    return nnx.merge(graph, jax.tree.unflatten(tree, noisy))  # biases, gammas and norm scales away from 0 and 1


def _rms(x, w):
    return x / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * w


def _ln(x, eps):
    mu = jnp.mean(x, -1, keepdims=True)
    return (x - mu) / jnp.sqrt(jnp.mean((x - mu) ** 2, -1, keepdims=True) + eps)


def titans_anchor(p, x):
    """NeuralMemory.forward(x) at its defaults (heads H, dim_head K, chunk 1, batch_size None), float64."""
    heads = lambda y: y.reshape(B, T, H, -1).transpose(0, 2, 1, 3)  # [B, H, T, .]
    xs, xr = _rms(x, p["store_scale"]), _rms(x, p["retrieve_scale"])
    q, k, v = heads(xr @ p["wq"]), heads(xs @ p["wk"]), heads(xs @ p["wv"])
    gate = lambda w, b: jax.nn.sigmoid(xs @ w + b).transpose(0, 2, 1)[..., None]  # [B, H, T, 1]
    lr, mom_gate, decay = gate(p["wlr"], p["blr"]), gate(p["wm"], p["bm"]), gate(p["wf"], p["bf"])

    def memory(w, x):
        y = jax.nn.gelu(x @ w["w1"], approximate=False) @ w["w2"]
        return x + _ln(y, 1e-5) * (w["gamma"] + 1.0)

    w0 = {n: p[n] for n in ("w1", "w2", "gamma")}
    per_token = lambda f: jax.vmap(jax.vmap(jax.vmap(f)))
    # every surprise at the call's initial weights, weighted by the adaptive lr (the loss weights)
    grads = per_token(lambda k, v, a: jax.grad(lambda w: a[0] * jnp.mean((memory(w, k) - v) ** 2))(w0))(k, v, lr)
    out = []
    S = jax.tree.map(lambda w: jnp.zeros((B, H, *w.shape)), w0)
    W = jax.tree.map(lambda w: jnp.broadcast_to(w, (B, H, *w.shape)), w0)
    at = lambda a, t, w: a[:, :, t].reshape(B, H, *([1] * (w.ndim - 2)))  # gate of token t against weight w
    for t in range(T):
        S = jax.tree.map(lambda s, g, t=t: at(mom_gate, t, s) * s - g[:, :, t], S, grads)
        W = jax.tree.map(lambda w, s, t=t: (1 - at(decay, t, w)) * w + s, W, S)
        out.append(jax.vmap(jax.vmap(memory))(W, q[:, :, t]))  # token t reads W_t (queries padded by one)
    out = jnp.stack(out, 2) * jax.nn.sigmoid(xr @ p["wg"]).transpose(0, 2, 1)[..., None]
    return out.transpose(0, 2, 1, 3).reshape(B, T, -1) @ p["wo"]


def titans_params(m):
    return {
        "store_scale": m.store_norm.scale[...], "retrieve_scale": m.retrieve_norm.scale[...],
        "wq": m.q.kernel[...], "wk": m.k.kernel[...], "wv": m.v.kernel[...],
        "wlr": m.b.kernel[...], "blr": m.b.bias[...], "wm": m.eta.kernel[...], "bm": m.eta.bias[...],
        "wf": m.forget.kernel[...], "bf": m.forget.bias[...], "wg": m.gate.kernel[...], "wo": m.o.kernel[...],
        "w1": m.w1[...], "w2": m.w2[...], "gamma": m.gamma[...],
    }  # fmt: skip


def _causal_conv(y, w, b):
    return sum(jnp.pad(y, ((0, 0), (j, 0), (0, 0)))[:, :T] * w[j] for j in range(w.shape[0])) + b


def ttt_anchor(p, x, size):
    """TTTLinear(x) (mini-batch dual form, inner LN, post LayerNorm, GELU gate), float64."""
    heads = lambda y: y.reshape(B, T, H, K).transpose(0, 2, 1, 3)  # [B, H, T, K]
    xqk = x @ p["wqk"]
    q, k = heads(_causal_conv(xqk, p["cq"], p["cqb"])), heads(_causal_conv(xqk, p["ck"], p["ckb"]))
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    v = heads(x @ p["wv"])
    eta = jax.nn.sigmoid(x @ p["wlr"] + p["blr"]).transpose(0, 2, 1)  # [B, H, T]
    inner_ln = lambda z, h: _ln(z, 1e-6) * p["ln_scale"][h] + p["ln_bias"][h]
    rows = []
    for b in range(B):
        for h in range(H):
            W, c = p["w0"][h], p["b0"][h]
            outs = []
            for s in range(0, T, size):
                Q, Kb, V, e = (
                    q[b, h, s : s + size],
                    k[b, h, s : s + size],
                    v[b, h, s : s + size],
                    eta[b, h, s : s + size],
                )
                out, vjp = jax.vjp(lambda z: inner_ln(z, h), Kb @ W + c)  # noqa: B023
                grad = vjp(out - (V - Kb))[0]
                mask = jnp.tril(jnp.ones((size, size)))
                c_bar = c - (e[None] * mask) @ grad
                z_bar = Q @ W - (e[None] * jnp.tril(Q @ Kb.T)) @ grad + c_bar
                outs.append(Q + inner_ln(z_bar, h))
                W, c = W - (e[:, None] * Kb).T @ grad, c - jnp.sum(e[:, None] * grad, 0)
            rows.append(jnp.concatenate(outs))
    Z = jnp.stack(rows).reshape(B, H, T, K).transpose(0, 2, 1, 3).reshape(B, T, D)
    Z = _ln(Z, 1e-6) * p["post_scale"] + p["post_bias"]
    return (Z * jax.nn.gelu(x @ p["wg"])) @ p["wo"]


def ttt_params(m):
    return {
        "wqk": m.qk.kernel[...], "cq": m.q_conv.kernel[...], "cqb": m.q_conv.bias[...], "ck": m.k_conv.kernel[...],
        "ckb": m.k_conv.bias[...], "wv": m.v.kernel[...], "wlr": m.b.kernel[...], "blr": m.b.bias[...],
        "w0": m.w0[...], "b0": m.b0[...], "ln_scale": m.ln_scale[...], "ln_bias": m.ln_bias[...],
        "post_scale": m.post_norm.scale[...], "post_bias": m.post_norm.bias[...], "wg": m.g.kernel[...],
        "wo": m.o.kernel[...],
    }  # fmt: skip


def _decode(mixer, x):
    cache, outs = mixer.init_cache(B, T), []
    for t in range(T):
        y, cache = mixer.step(x[:, t], cache, position=jnp.asarray(t))
        outs.append(y)
    return jnp.stack(outs, 1)


def _check_against_anchor(mixer, params_of, anchor):
    x = jax.random.normal(jax.random.key(2), (B, T, D))
    probe = jax.random.normal(jax.random.key(3), (B, T, D))
    positions = jnp.broadcast_to(jnp.arange(T), (B, T))
    with jax.enable_x64(True):
        p64 = {n: jnp.asarray(np.asarray(a), jnp.float64) for n, a in params_of(mixer).items()}
        x64 = jnp.asarray(np.asarray(x), jnp.float64)
        loss = lambda p: jnp.sum(anchor(p, x64) * np.asarray(probe, np.float64))
        want, want_grads = jax.jit(anchor)(p64, x64), jax.jit(jax.grad(loss))(p64)
        want, want_grads = np.asarray(want), jax.tree.map(np.asarray, want_grads)
    assert np.abs(want).max() > 1e-2
    np.testing.assert_allclose(mixer(x, positions=positions), want, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(_decode(mixer, x), want, rtol=1e-4, atol=2e-5)
    grads = nnx.jit(nnx.grad(lambda m: jnp.sum(m(x, positions=positions) * probe)))(mixer)
    got = params_of(nnx.merge(nnx.graphdef(mixer), grads))
    for name, g in want_grads.items():
        assert np.abs(g).max() > 1e-4, name
        np.testing.assert_allclose(got[name], g, rtol=1e-3, atol=1e-4 * np.abs(g).max(), err_msg=name)


@pytest.mark.slow
def test_titans_default_is_the_anchor_layer():
    _check_against_anchor(_mixer(Titans), titans_params, titans_anchor)


@pytest.mark.slow
def test_ttt_linear_default_is_the_anchor_layer():
    mixer = _mixer(TTTLinear, "model.ttt_minibatch=4")
    _check_against_anchor(mixer, ttt_params, lambda p, x: ttt_anchor(p, x, 4))
