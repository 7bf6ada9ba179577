"""δ-mem and LoRA adapters on the attn layers (memlab.models.adapters): the kernel mapping against a token-serial
float64 transcription of the anchor's equations, the exact backbone at a zero state, controller gradients from the
base-slice init, causality and decoding, the init_from hook (base slice of the LOADED backbone, frozen backbone
bit-identical), parameter blocks, FLOPs against XLA and the knobs' errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memlab.config import load_config
from memlab.errors import ConfigError
from memlab.models import build_model
from memlab.models.adapters import BASE_SLICE_GAIN, kernel_inputs, read_and_write, window_ends
from memlab.models.params import flat_params, path_name
from memlab.train.checkpoint import load_model
from memlab.train.loop import train
from memlab.train.param_blocks import apply_block, save_block
from tests.helpers import ROOT, TINY, analytic_and_xla_flops, assert_causal, assert_close, decoded_logits, logits_of

SSW = ("model.delta_mem=ssw", "model.attention_window=4", "model.attention_window_kind=block")


def transcription(q, k, v, z, update, segment_ids, write):
    """Reads [B, T, n_s, r] of the anchor's update written from its equations, token by token (jnp, so that it
    differentiates): reset at a new segment, read r_t = S q~_t, then (where `write`) the "standard" or
    "lambda_outside" write with one beta per row of S."""
    T = q.shape[1]
    S = jnp.zeros(q.shape[:1] + q.shape[2:] + q.shape[-1:], q.dtype)  # [B, n_s, r (rows, value), r (key)]
    reads = []
    for t in range(T):
        if t > 0:
            S = jnp.where((segment_ids[:, t] != segment_ids[:, t - 1])[:, None, None, None], 0.0, S)
        reads.append(jnp.einsum("bnij,bnj->bni", S, q[:, t]))
        beta = jax.nn.sigmoid(z[:, t])[..., None]  # diag(beta): one per row
        lam = 1.0 - beta
        kt = k[:, t][..., None, :]
        Sk_kT = jnp.einsum("bnij,bnj->bni", S, k[:, t])[..., None] * kt
        written = beta * v[:, t][..., None] * kt
        if update == "standard":
            new = lam * S - beta * Sk_kT + written
        else:
            new = lam * (S - beta * Sk_kT) + written
        S = jnp.where(write[:, t][:, None, None, None], new, S)
    return jnp.stack(reads, axis=1)


def adapter_kernel(q, k, v, z, update, segment_ids, write, backend):
    """The reads of the adapter's kernel path (kernel_inputs -> delta_rule), [B, T, n_s, r]."""
    r, _ = read_and_write(
        *kernel_inputs(q, k, v, z, update, write), segment_ids=segment_ids, chunk_size=4, backend=backend
    )
    return r.reshape(q.shape)


@pytest.mark.parametrize("writes", ["every token", "window ends"])
@pytest.mark.parametrize("update", ["standard", "lambda_outside"])
@pytest.mark.parametrize("backend", ["reference", "chunked", "pallas"])
def test_kernel_mapping_equals_the_token_serial_transcription_x64(backend, update, writes):
    rng = np.random.default_rng(0)
    B, T, n_s, r = 2, 11, 2, 3
    with jax.enable_x64(True):
        unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
        inputs = dict(
            q=jnp.asarray(unit(np.tanh(rng.standard_normal((B, T, n_s, r))))),
            k=jnp.asarray(unit(np.tanh(rng.standard_normal((B, T, n_s, r))))),
            v=jnp.asarray(rng.standard_normal((B, T, n_s, r))),
            z=jnp.asarray(rng.standard_normal((B, T, n_s, r)) - 1.0),
        )
        segment_ids = jnp.asarray([[0] * 6 + [1] * 5, [0] * 11])
        positions = jnp.asarray([list(range(6)) + list(range(5)), list(range(11))])
        write = jnp.ones((B, T), bool) if writes == "every token" else window_ends(positions, segment_ids, 3)[1]
        weights = jnp.cos(jnp.arange(B * T * n_s * r)).reshape(B, T, n_s, r)

        def loss(fn, inputs):
            reads = fn(**inputs, update=update, segment_ids=segment_ids, write=write)
            return jnp.sum(weights * reads), reads

        run = lambda fn: jax.value_and_grad(lambda d: loss(fn, d), has_aux=True)(inputs)
        (_, want), want_grads = run(transcription)
        (_, got), got_grads = run(lambda **kw: adapter_kernel(**kw, backend=backend))
        assert float(jnp.abs(want).max()) > 0.1  # the state was written and read
        assert_close(got, want, rtol=1e-9, atol=1e-11, what="reads")
        for name in inputs:
            assert_close(got_grads[name], want_grads[name], rtol=1e-8, atol=1e-10, what=f"d/d{name}")


def backbone_of(model, cfg):
    """The same LM without adapters, holding `model`'s backbone parameters."""
    base_cfg = cfg.model.copy_and_resolve_references()
    base_cfg.delta_mem, base_cfg.lora_rank = "", 0
    base = build_model(base_cfg, seed=1)
    mine = flat_params(nnx.state(model, nnx.Param))
    paths = [path for path, _ in nnx.to_flat_state(nnx.state(base, nnx.Param))]
    nnx.update(base, nnx.from_flat_state({path: mine[path_name(path)] for path in paths}))
    return base


def test_a_zero_state_leaves_the_backbone_exact(tiny_config):
    """Reads of a zero state are exactly 0, so Delta q = Delta o = 0 although W_dq, W_do (base slice) are not: the
    first token of every sequence, and every token when W_mv = 0 keeps the state at zero."""
    cfg = tiny_config("model.delta_mem=msw")
    model = build_model(cfg.model, seed=0)
    assert float(jnp.abs(model.blocks[0].mixer.delta_mem.dq.kernel[...]).max()) > 0  # the base slice
    base = backbone_of(model, cfg)
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, cfg.model.vocab_size)
    want = np.asarray(logits_of(base, {"inputs": tokens}))
    got = np.asarray(logits_of(model, {"inputs": tokens}))
    np.testing.assert_array_equal(got[:, 0], want[:, 0])
    assert not np.allclose(got[:, 1:], want[:, 1:], atol=1e-4)  # the memory does act once written
    for block in model.blocks:
        block.mixer.delta_mem.mv.kernel[...] = jnp.zeros_like(block.mixer.delta_mem.mv.kernel[...])
    np.testing.assert_array_equal(np.asarray(logits_of(model, {"inputs": tokens})), want)


@pytest.mark.slow
@pytest.mark.parametrize("init", ["base_slice", "zero"])
def test_base_slice_init_gives_the_controller_gradients_after_one_write(tiny_config, init):
    cfg = tiny_config("model.delta_mem=tsw", f"model.delta_mem_init={init}")
    model = build_model(cfg.model, seed=0)
    graphdef, params = nnx.split(model, nnx.Param)
    tokens = jnp.asarray([[3, 5]])  # token 0 writes, token 1 reads

    def loss(params):
        logits = nnx.merge(graphdef, params)({"inputs": tokens})["logits"]
        return jnp.sum(jnp.sin(logits[:, 1]))

    grads = flat_params(jax.grad(loss)(params))
    controller = [n for n in grads if "/delta_mem/" in n and n.split("/")[-2] in ("mq", "mk", "mv", "beta")]
    assert len(controller) == 2 * 5  # mq, mk, mv kernels, beta kernel and bias, in both layers
    norms = {n: float(jnp.linalg.norm(grads[n])) for n in controller}
    if init == "base_slice":
        assert all(v > 0 for v in norms.values()), norms
    else:
        assert all(v == 0 for v in norms.values()), norms


CASES = {
    "tsw": ("model.delta_mem=tsw",),
    "tsw-lambda_outside-sliding": (
        "model.delta_mem=tsw",
        "model.delta_mem_update=lambda_outside",
        "model.attention_window=4",
    ),
    "msw-block": ("model.delta_mem=msw", "model.attention_window=4", "model.attention_window_kind=block"),
    "ssw": SSW,
    "ssw-qkv_conv-lora": (*SSW, "model.qkv_conv=True", "model.lora_rank=4"),
    "lora": ("model.lora_rank=4",),
}


@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES)
def test_causal_and_decoding_equals_the_parallel_forward(tiny_config, overrides):
    cfg = tiny_config("data.seq_len=16", "model.matrix_chunk_size=8", *overrides)
    model = build_model(cfg.model, seed=0)
    for block in model.blocks:  # LoRA's B starts at zero (a no-op): give it something to carry
        if block.mixer.lora is not None:
            for b in (block.mixer.lora.q_b, block.mixer.lora.o_b):
                b.kernel[...] = 0.1 * jax.random.normal(jax.random.key(5), b.kernel.shape)
    tokens = jax.random.randint(jax.random.key(1), (2, 14), 0, cfg.model.vocab_size)
    parallel = logits_of(model, {"inputs": tokens})
    assert_close(decoded_logits(model, tokens), parallel, rtol=1e-5, atol=2e-5, what="decoded logits")
    assert_causal(lambda t: logits_of(model, {"inputs": t}), tokens, cfg.model.vocab_size, positions=(0, 5, 9, 13))
    assert_causal(lambda t: decoded_logits(model, t), tokens, cfg.model.vocab_size, positions=(3, 9), atol=1e-5)


def test_ssw_writes_once_per_window_and_restarts_in_each_document(tiny_config):
    """Packed: two documents (positions restart) give each one's logits alone. A token changed in window 1 (4-7)
    reaches window 2 only through the memory (attention is block-windowed), and in one layer it changes nothing
    else in window 1 but what attends to it."""
    cfg = tiny_config("data.seq_len=16", "model.num_layers=1", *SSW)
    model = build_model(cfg.model, seed=0)
    tokens = jax.random.randint(jax.random.key(2), (1, 14), 0, cfg.model.vocab_size)
    seg = jnp.asarray([[0] * 6 + [1] * 8])
    positions = jnp.asarray([list(range(6)) + list(range(8))])
    packed = logits_of(model, {"inputs": tokens, "segment_ids": seg, "positions": positions})
    for part in (slice(0, 6), slice(6, 14)):
        alone = logits_of(model, {"inputs": tokens[:, part]})
        assert_close(packed[:, part], alone, rtol=1e-5, atol=1e-5, what=f"document {part}")
    base = np.asarray(logits_of(model, {"inputs": tokens}))
    changed = np.asarray(logits_of(model, {"inputs": tokens.at[:, 5].set((tokens[:, 5] + 7) % 64)}))
    np.testing.assert_array_equal(changed[:, :5], base[:, :5])
    assert not np.allclose(changed[:, 8:], base[:, 8:], atol=1e-4)  # window 2 reads window 1's write


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """A finished tiny run without adapters (2 steps) to start the adapters from."""
    run_dir = tmp_path_factory.mktemp("backbone")
    train(load_config(ROOT / "experiments" / "mqar.py", [*TINY, "train.steps=2"]), run_dir)
    return run_dir


@pytest.mark.slow
def test_init_from_a_backbone_starts_from_its_base_slice_and_keeps_it_frozen(backbone, tiny_config, tmp_path):
    model, _, _ = load_model(backbone)
    before = {k: np.asarray(v) for k, v in flat_params(nnx.state(model, nnx.Param)).items()}
    summary = train(
        tiny_config(
            "model.delta_mem=tsw",
            f"train.init_from={backbone}",
            "train.trainable=.*delta_mem/",
            "train.steps=3",
            "train.checkpoint_every=1",
        ),
        tmp_path / "adapters",
    )
    steps = {s: load_model(tmp_path / "adapters", step=s)[0] for s in (1, 3)}  # step 1 runs at lr 0 (warmup)
    start, end = ({k: np.asarray(v) for k, v in flat_params(nnx.state(m, nnx.Param)).items()} for m in steps.values())
    adapters = {k for k in end if "/delta_mem/" in k}
    assert summary["params_trainable"] == sum(end[k].size for k in adapters)
    for i in range(2):
        q, o = (before[f"blocks/{i}/mixer/{p}/kernel"][:8] for p in ("q", "o"))
        for name, rows in (("dq", q), ("do", o)):
            want = BASE_SLICE_GAIN * rows / np.linalg.norm(rows, axis=-1, keepdims=True)
            np.testing.assert_allclose(start[f"blocks/{i}/mixer/delta_mem/{name}/kernel"], want, rtol=1e-6)
    for name, value in end.items():
        if name in adapters:
            assert not np.array_equal(value, start[name]) or "beta/kernel" in name, name
        else:
            np.testing.assert_array_equal(value, before[name], err_msg=name)


@pytest.mark.slow
def test_init_from_refuses_a_frozen_parameter_the_source_lacks(backbone, tiny_config, tmp_path):
    cfg = tiny_config("model.delta_mem=tsw", f"train.init_from={backbone}", "train.trainable=.*mq/")
    with pytest.raises(ConfigError, match=r"has no parameter\(s\) \['blocks/0/mixer/delta_mem/beta/bias'"):
        train(cfg, tmp_path / "run")


def test_adapters_round_trip_as_a_parameter_block(tiny_config, tmp_path):
    cfg = tiny_config("model.delta_mem=ssw", "model.attention_window=8", "model.attention_window_kind=block")
    source, target = build_model(cfg.model, seed=0), build_model(cfg.model, seed=1)
    saved = save_block(source, "blocks/1/mixer/delta_mem", tmp_path / "block")
    assert set(saved) == {f"{p}/{leaf}" for p in ("mq", "mk", "mv", "dq", "do") for leaf in ("kernel",)} | {
        "beta/kernel",
        "beta/bias",
    }
    assert apply_block(target, tmp_path / "block") == "blocks/1/mixer/delta_mem"
    got = flat_params(nnx.state(target, nnx.Param))
    for rel, value in saved.items():
        np.testing.assert_array_equal(np.asarray(got[f"blocks/1/mixer/delta_mem/{rel}"]), np.asarray(value))


@pytest.mark.parametrize(
    "overrides",
    [
        ("model.delta_mem=msw", "model.d_model=64", "model.num_heads=4"),
        SSW,
        ("model.lora_rank=8",),
        ("model.delta_mem=tsw", "model.lora_rank=4"),
    ],
    ids=["msw", "ssw", "lora", "tsw+lora"],
)
def test_analytic_flops_match_xla_within_10_percent(tiny_config, overrides):
    cfg = tiny_config(*overrides)
    analytic, xla = analytic_and_xla_flops(cfg)
    assert abs(analytic - xla) / xla < 0.10, (analytic, xla)


def test_state_size_counts_the_memory(tiny_config):
    plain = build_model(tiny_config().model, seed=0).state_size(32)
    for kind, n_s in (("tsw", 1), ("msw", 4)):
        model = build_model(tiny_config(f"model.delta_mem={kind}").model, seed=0)
        assert model.state_size(32) == plain + 2 * n_s * 8 * 8


@pytest.mark.parametrize(
    "overrides, match",
    [
        (("model.delta_mem=big",), r"model.delta_mem='big' is not accepted; choose one of '' \(off\), tsw, ssw, msw"),
        (("model.delta_mem=tsw", "model.delta_mem_rank=0"), r"model.delta_mem_rank=0 must be a positive int"),
        (("model.delta_mem=tsw", "model.delta_mem_alpha=-1.0"), r"model.delta_mem_alpha=-1.0 must be a positive"),
        (("model.delta_mem=tsw", "model.delta_mem_update=x"), r"model.delta_mem_update='x' is not accepted; choose"),
        (("model.delta_mem=tsw", "model.delta_mem_init=x"), r"model.delta_mem_init='x' is not accepted; choose one"),
        (("model.delta_mem=msw", "model.delta_mem_rank=16"), r"first 64 rows .* but model.d_model=32"),
        (("model.delta_mem=ssw",), r"model.delta_mem='ssw' .* model.attention_window_kind='block' \(got 'sliding'\)"),
        (("model.delta_mem=ssw", "model.attention_window_kind=block"), r"model.attention_window > 0 \(got 0\)"),
        (("model.lora_rank=-1",), r"model.lora_rank=-1 must be an int >= 0"),
        (("model.lora_rank=2", "model.lora_alpha=0.0"), r"model.lora_alpha=0.0 must be a positive number"),
        (("model.delta_mem=tsw", "model.mixers=gdn"), r"adapt attn layers; model.mixers has none"),
    ],
)
def test_bad_knobs_name_the_key(tiny_config, overrides, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        build_model(tiny_config(*overrides).model, seed=0)
