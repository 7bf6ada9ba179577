"""Memory models and their data: text_chunks examples, causality across chunks (a chunk's memory is read only by
later chunks), the blank-copy view built without touching the batch, the autoencoder's cyclic unroll and its
reconstruction targets, analytic FLOPs against XLA (frozen encoder included), knob errors, a frozen autoencoder
encoder that stays bit-identical, embedding included, while a memory decoder trains on top of it, and Badger's
masked mixer (model.mixer=masked): causal by construction, equal to its explicit sum, trainable end to end."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from memlab import objectives, passes
from memlab.config import ConfigError, load_config, to_dict
from memlab.data.pipeline import example_shapes
from memlab.data.prepare import prepare
from memlab.data.tasks.text import Text
from memlab.data.tasks.text_chunks import TextChunks, _text_config, reserved_ids
from memlab.models import build_model
from memlab.models.memory_model import unroll_index
from memlab.models.mixers.masked import MaskedMixer
from memlab.models.params import flat_params
from memlab.probes.memory_info import probe_config, probe_memory
from memlab.train.checkpoint import load_model
from memlab.train.flops import analytic_flops_per_token, xla_flops_per_token
from memlab.train.loop import check_resumable, train
from memlab.train.partial import trainable_names
from memlab.train.run_dir import RunDir
from memlab.train.step import make_grad_fn
from tests.helpers import ROOT, assert_causal, logits_of

N, L = 4, 8
T = N * L
TEXT_VOCAB = 257  # the byte tokeniser's ids, EOS included
DELIMITER, BLANK = reserved_ids(TEXT_VOCAB)
SMALL = [
    f"data.num_chunks={N}",
    f"data.chunk_len={L}",
    "model.d_model=16",
    "model.num_heads=2",
    "model.qkv_conv=False",
    "train.steps=4",
    "train.warmup_steps=1",
    "train.batch_size=4",
    "train.eval_every=2",
    "train.checkpoint_every=4",
    "train.log_every=1",
    "eval.num_examples=8",
    "eval.batch_size=4",
    "data.num_workers=1",
    "logging.wandb_mode=disabled",
    "logging.progress=False",
]


def config(corpus, *overrides, experiment="memory_model.py"):
    return load_config(ROOT / "experiments" / experiment, [f"data.path={corpus}", *SMALL, *overrides])


def random_tokens(seed=0, batch=2):
    return jax.random.randint(jax.random.key(seed), (batch, T), 0, TEXT_VOCAB)


def test_examples_are_chunks_of_the_text_stream(text_corpus):
    cfg = config(text_corpus)
    assert cfg.model.num_chunks == N and cfg.model.vocab_size == BLANK + 1 == 259
    src = TextChunks(cfg.data, "train", seed=0)
    text = Text(_text_config(cfg.data), "train", seed=0)
    for i in range(6):
        ex = src[i]
        assert {k: v.shape for k, v in ex.items()} == {
            **{k: (T,) for k in ("inputs", "targets", "token_mask")},
            "reserved_ids": (2,),
        }
        assert ex["reserved_ids"].tolist() == [DELIMITER, BLANK] == [257, 258]
        np.testing.assert_array_equal(ex["inputs"], text[i]["inputs"])  # the text task's window
        np.testing.assert_array_equal(ex["inputs"][1:], ex["targets"][:-1])  # next token of the stream
        mask = ex["token_mask"].reshape(N, L)
        assert np.all(mask[:, :-1] == 1) and np.all(mask[:, -1] == 0)  # a chunk's first token is never scored
        assert ex["inputs"].max() < TEXT_VOCAB and ex["targets"].max() < TEXT_VOCAB  # reserved ids stay unused
    np.testing.assert_array_equal(src[3]["inputs"], TextChunks(cfg.data, "train", seed=0)[3]["inputs"])
    assert not np.array_equal(src[0]["inputs"], TextChunks(cfg.data, "eval", seed=0)[0]["inputs"])


def test_later_chunks_loss_scores_chunks_after_the_first_only(text_corpus):
    cfg = config(text_corpus)
    src = TextChunks(cfg.data, "eval", seed=0)
    batch = {k: jnp.stack([src[i][k] for i in range(3)]) for k in ("inputs", "targets", "token_mask")}
    model = build_model(cfg.model, seed=0)
    logits = np.asarray(model(batch)["logits"], np.float64)
    got = float(src.eval_metrics({"logits": jnp.asarray(logits)}, batch)["later_chunks_loss"])
    # by hand: log-softmax at every position of chunks 1..n-1 but a chunk's last (its target starts the next)
    logp = (
        logits
        - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - logits.max(-1)[..., None]
    )
    picked = np.take_along_axis(logp, np.asarray(batch["targets"])[..., None], -1)[..., 0].reshape(3, N, L)
    np.testing.assert_allclose(got, -picked[:, 1:, :-1].mean(), rtol=1e-5)
    assert src.eval_metrics({"logits": logits, "targets": batch["inputs"]}, batch) == {}  # an autoencoder's


@pytest.mark.parametrize("mixer", ["attn", "masked"])
def test_a_token_reaches_its_chunk_after_it_and_later_chunks_through_memory(text_corpus, mixer):
    model = build_model(config(text_corpus, f"model.mixer={mixer}").model, seed=0)
    tokens = random_tokens()
    outputs_of = lambda t: logits_of(model, {"inputs": t})
    assert_causal(outputs_of, tokens, TEXT_VOCAB, positions=(0, 5, L, 2 * L + 3, -1))
    base = np.asarray(outputs_of(tokens)).reshape(2, N, L, -1)
    for chunk in range(N):
        for offset in (0, L - 1):
            changed = tokens.at[:, chunk * L + offset].set((tokens[:, chunk * L + offset] + 7) % TEXT_VOCAB)
            out = np.asarray(outputs_of(changed)).reshape(2, N, L, -1)
            np.testing.assert_allclose(out[:, :chunk], base[:, :chunk], atol=1e-6)  # earlier chunks
            np.testing.assert_allclose(out[:, chunk, :offset], base[:, chunk, :offset], atol=1e-6)
            assert not np.allclose(out[:, chunk, offset:], base[:, chunk, offset:], atol=1e-4)
            for later in range(chunk + 1, N):  # every later decoder reads this chunk's memory
                assert not np.allclose(out[:, later], base[:, later], atol=1e-4), (chunk, offset, later)


def test_blank_copy_hides_the_repeat_and_leaves_the_batch_alone():
    inputs = np.arange(1, T + 1, dtype=np.int32)[None]
    batch = {
        "inputs": inputs,
        "targets": inputs + 1,
        "token_mask": np.tile([1.0] * (L - 1) + [0.0], N)[None],
        "reserved_ids": np.array([[DELIMITER, BLANK]], np.int32),
    }
    before = {k: v.copy() for k, v in batch.items()}
    view = passes.view("blank_copy", batch)
    for k, v in batch.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)  # nothing written into the caller's arrays
    h = T // 2
    seen, targets, mask = (np.asarray(view[k][0]) for k in ("inputs", "targets", "token_mask"))
    np.testing.assert_array_equal(seen[:h], inputs[0, :h])
    assert seen[h] == DELIMITER and np.all(seen[h + 1 :] == BLANK)  # the repeat is nowhere in view
    np.testing.assert_array_equal(targets[h:], before["targets"][0, :h])  # the first half, one token ahead
    np.testing.assert_array_equal(mask, np.r_[np.zeros(h), before["token_mask"][0, :h]])  # the repeat only
    assert view["inputs"].dtype == inputs.dtype


def test_unroll_index_wraps_by_the_width():
    seq_len, d = 40, 16  # longer than d: the row offset wraps too
    expected = [[(i % d) + j - d if (i % d) + j >= d else (i % d) + j for j in range(d // 2)] for i in range(seq_len)]
    np.testing.assert_array_equal(np.asarray(unroll_index(seq_len, d)), expected)


@pytest.mark.parametrize("mixer", ["attn", "masked"])
def test_autoencoder_regenerates_each_chunk_from_its_memory_alone(text_corpus, mixer):
    model = build_model(config(text_corpus, "model.mode=autoencoder", f"model.mixer={mixer}").model, seed=0)
    assert model.decoder.embed is None  # the decoder reads no tokens
    tokens = random_tokens()
    out = nnx.jit(lambda m, b: m(b))(model, {"inputs": tokens})
    np.testing.assert_array_equal(out["targets"], tokens)
    np.testing.assert_array_equal(out["token_mask"], np.ones((2, T)))
    loss, _ = objectives.next_token(out, {"targets": tokens + 1, "token_mask": jnp.zeros((2, T))})
    expected, _ = objectives.masked_cross_entropy(out["logits"], tokens, jnp.ones((2, T)))
    assert float(loss) == pytest.approx(float(expected))  # scored against the returned targets, not the batch's
    changed = tokens.at[:, L].set((tokens[:, L] + 7) % TEXT_VOCAB)  # first token of chunk 1
    after = np.asarray(logits_of(model, {"inputs": changed})).reshape(2, N, L, -1)
    base = np.asarray(out["logits"]).reshape(2, N, L, -1)
    for chunk in (0, 2, 3):
        np.testing.assert_allclose(after[:, chunk], base[:, chunk], atol=1e-6)
    assert all(not np.allclose(after[:, 1, i], base[:, 1, i], atol=1e-4) for i in range(L))  # all from e


@pytest.mark.parametrize("mode", ["memory", "autoencoder"])
def test_without_memory_a_chunk_reads_nothing_but_its_own_tokens(text_corpus, mode):
    """model.memory=none: the no-memory control; a chunk's logits do not move when earlier chunks change (memory
    mode) or when the chunk itself changes (autoencoder: the decoder reads the pad vector only)."""
    model = build_model(config(text_corpus, f"model.mode={mode}", "model.memory=none").model, seed=0)
    tokens = random_tokens()
    base = np.asarray(logits_of(model, {"inputs": tokens})).reshape(2, N, L, -1)
    other = random_tokens(seed=1)
    for chunk in range(1, N + 1):  # chunks before `chunk` replaced
        changed = tokens.at[:, : chunk * L].set(other[:, : chunk * L])
        out = np.asarray(logits_of(model, {"inputs": changed})).reshape(2, N, L, -1)
        unchanged = slice(chunk, None) if mode == "memory" else slice(None)
        np.testing.assert_allclose(out[:, unchanged], base[:, unchanged], atol=1e-6)
        if mode == "memory" and chunk < N:
            assert not np.allclose(out[:, chunk - 1], base[:, chunk - 1], atol=1e-4)  # its own tokens still count


FLOP_CASES = {
    "memory": ((), None, {"next_token": 1.0}),
    "memory qkv_conv bottleneck mean": (
        ("model.qkv_conv=True", "model.compression=2", "model.summary=mean"),
        None,
        {"next_token": 1.0},
    ),
    "autoencoder": (("model.mode=autoencoder",), None, {"next_token": 1.0}),
    "combined": ((), None, {"next_token": 1.0, "next_token@blank_copy": 0.5}),
    "frozen encoder": ((), ("decoder/",), {"next_token": 1.0}),
    "no memory": (("model.memory=none",), None, {"next_token": 1.0}),
    "no memory autoencoder": (("model.mode=autoencoder", "model.memory=none"), None, {"next_token": 1.0}),
    "masked": (("model.mixer=masked", "model.mixer_heads=2"), None, {"next_token": 1.0}),
    "masked autoencoder": (("model.mode=autoencoder", "model.mixer=masked"), None, {"next_token": 1.0}),
    "masked frozen encoder": (("model.mixer=masked",), ("decoder/",), {"next_token": 1.0}),
    # chunks of 64 at width 16: the L x L mixing is a quarter of the blocks' FLOPs, so a miscount would show
    "masked long chunks": (
        ("model.mixer=masked", "data.chunk_len=64", "model.d_model=16"),
        None,
        {"next_token": 1.0, "next_token@blank_copy": 0.5},
    ),
}


@pytest.mark.parametrize("overrides, patterns, weights", FLOP_CASES.values(), ids=FLOP_CASES)
@pytest.mark.slow
def test_analytic_flops_match_xla_within_10_percent(text_corpus, overrides, patterns, weights):
    cfg = config(text_corpus, "model.d_model=32", *overrides)
    model = build_model(cfg.model, seed=0)
    graphdef, params = nnx.split(model, nnx.Param)
    shapes = example_shapes(cfg)
    batch = {k: jnp.zeros((4, *s), jnp.float32 if k == "token_mask" else jnp.int32) for k, s in shapes.items()}
    trainable = trainable_names(params, patterns)
    tokens = shapes["inputs"][-1]
    analytic = analytic_flops_per_token(model, shapes, tokens, trainable, weights)
    xla = xla_flops_per_token(make_grad_fn(graphdef, weights, trainable), params, batch, tokens)
    assert abs(analytic - xla) / xla < 0.10, (analytic, xla)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (("model.mode=decoder",), "model.mode='decoder' is not accepted; choose one of memory, autoencoder"),
        (("model.summary=first",), "model.summary='first' is not accepted"),
        (("model.memory=zero",), "model.memory='zero' is not accepted; choose one of read, none"),
        (("model.compression=3",), "model.compression=3 must divide model.d_model=16"),
        (("model.mixer=conv",), "model.mixer='conv' is not accepted; choose one of attn, masked"),
        (("model.mixer=masked", "model.mixer_heads=3"), "model.mixer_heads=3 must divide model.d_model=16"),
        (("model.mixer_heads=0",), "model.mixer_heads=0 must be a positive integer"),
        (("model.chunk_len=0",), "model.chunk_len=0 must be a positive integer"),
        (("model.encoder_layers=0",), "model.encoder_layers=0 must be a positive integer"),
        (("data.num_chunks=0",), "num_chunks=0 must be a positive integer"),
        (("data.chunk_len=1",), "data.chunk_len=1 must be >= 2"),
        (("data.vocab_size=258",), "data.vocab_size=258 cannot hold the 257 ids of the tokeniser .*need|>= 259"),
        (("data.path=''",), "data.path='' .*data.path is empty"),
    ],
)
def test_bad_knobs_name_the_key(text_corpus, overrides, match):
    with pytest.raises(ConfigError, match=match):
        config(text_corpus, *overrides)


def test_inputs_must_split_into_chunks(text_corpus):
    model = build_model(config(text_corpus).model, seed=0)
    with pytest.raises(ValueError, match="inputs of 30 tokens do not split into model.num_chunks=4 chunks"):
        model({"inputs": jnp.zeros((1, 30), jnp.int32)})
    assert model.state_size(N * (L + 1)) > model.state_size(T)  # attention takes chunks of any length


def test_a_masked_model_takes_only_its_chunk_len(text_corpus):
    cfg = config(text_corpus, "model.mixer=masked")
    assert cfg.model.chunk_len == L  # follows data.chunk_len
    model = build_model(cfg.model, seed=0)
    match = f"inputs of {N * (L + 1)} tokens are {N} chunks of {L + 1}, but model.mixer=masked was built for "
    match += f"model.chunk_len={L}"
    with pytest.raises(ValueError, match=match):
        model({"inputs": jnp.zeros((1, N * (L + 1)), jnp.int32)})
    with pytest.raises(ValueError, match=match):
        model.state_size(N * (L + 1))
    # state: the n - 1 memories and, per decoder layer, the masked mixer's inputs over its row of n + L
    assert model.state_size(T) == (N - 1) * 16 + cfg.model.num_layers * (N + L) * 16


def masked_mixer(heads=2, d=8, length=5, seed=0):
    cfg = ml_collections.ConfigDict({"d_model": d, "mixer_heads": heads})
    return MaskedMixer(cfg, length, rngs=nnx.Rngs(seed))


def test_the_masked_mixer_is_its_explicit_causal_sum_per_head():
    heads, d, length = 2, 8, 5
    mixer = masked_mixer(heads, d, length)
    x = np.asarray(jax.random.normal(jax.random.key(1), (3, length, d)), np.float64)
    w, b = np.asarray(mixer.weight[...], np.float64), np.asarray(mixer.bias[...], np.float64)
    upper = np.triu_indices(length, 1)
    assert np.all(w[:, upper[0], upper[1]] != 0)  # the upper triangle exists (initialised) but must not act
    c = d // heads
    expected = np.zeros_like(x)
    for h in range(heads):
        for i in range(length):
            expected[:, i, h * c : (h + 1) * c] = b[h, i] + sum(
                w[h, i, j] * x[:, j, h * c : (h + 1) * c] for j in range(i + 1)
            )
    y = mixer(jnp.asarray(x, jnp.float32), positions=jnp.zeros((3, length), jnp.int32))
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)


def test_the_masked_mixers_upper_triangle_gets_exactly_zero_gradient():
    mixer = masked_mixer()
    x = jax.random.normal(jax.random.key(1), (3, 5, 8))
    loss = lambda m: jnp.sum(jnp.sin(m(x, positions=jnp.zeros((3, 5), jnp.int32))))
    grad = np.asarray(nnx.grad(loss)(mixer).weight[...])
    upper, lower = np.triu_indices(5, 1), np.tril_indices(5)
    assert np.all(grad[:, upper[0], upper[1]] == 0.0)
    assert np.all(grad[:, lower[0], lower[1]] != 0.0)  # the lower triangle, diagonal included, trains


@pytest.mark.slow
def test_a_masked_memory_model_trains_and_its_probe_uses_its_mixer(text_corpus, tmp_path):
    cfg = config(text_corpus, "model.mixer=masked", "model.mixer_heads=2")
    summary = train(cfg, tmp_path / "masked")
    assert summary["status"] == "completed" and summary["step"] == 4
    assert np.isfinite(summary["train/loss"]) and np.isfinite(summary["eval/loss"]), summary
    assert summary["state_size"] == (N - 1) * 16 + 2 * (N + L) * 16  # memories and the decoder mixers' inputs
    probe = probe_config(tmp_path / "masked", steps=2).model  # an autoencoder on windows of L: one chunk of L
    assert (probe.mixer, probe.mixer_heads, probe.chunk_len, probe.num_chunks) == ("masked", 2, L, 1)
    overrides = ["eval.num_examples=8", "eval.batch_size=4", "data.num_workers=1"]
    info = probe_memory(tmp_path / "masked", steps=2, workdir=tmp_path / "probe", overrides=overrides, ce_null=2.0)
    run, probed = params_of(tmp_path / "masked"), params_of(info["probe_dir"])
    encoder = [k for k in probed if k.startswith("encoder/")]
    assert "encoder/blocks/0/mixer/weight" in encoder  # the run's masked encoder, loaded and kept frozen
    for name in encoder:
        np.testing.assert_array_equal(probed[name], run[name], err_msg=name)


def params_of(run_dir) -> dict:
    model, _, _ = load_model(run_dir)
    return {k: np.asarray(v) for k, v in flat_params(nnx.state(model, nnx.Param)).items()}


@pytest.mark.slow
def test_a_frozen_autoencoder_encoder_stays_bit_identical_under_a_training_decoder(text_corpus, tmp_path):
    ae_cfg = config(text_corpus, experiment="memory_autoencoder.py")
    train(ae_cfg, tmp_path / "ae")
    encoder = params_of(tmp_path / "ae")
    fresh = {k: np.asarray(v) for k, v in flat_params(nnx.state(build_model(ae_cfg.model, 0), nnx.Param)).items()}
    assert not np.array_equal(encoder["encoder/embed/embedding"], fresh["encoder/embed/embedding"])  # it trained

    cfg = config(
        text_corpus, f"train.init_from={tmp_path / 'ae'}", "train.init_map=encoder->encoder", "train.trainable=decoder/"
    )
    summary = train(cfg, tmp_path / "memory")
    after = params_of(tmp_path / "memory")
    frozen = [k for k in after if k.startswith("encoder/")]
    assert "encoder/embed/embedding" in frozen  # the encoder owns its embedding (pitfall A.4)
    for name in frozen:
        np.testing.assert_array_equal(after[name], encoder[name], err_msg=name)
    decoder = [k for k in after if k.startswith("decoder/")]
    assert summary["params_trainable"] == sum(after[k].size for k in decoder)
    start = flat_params(nnx.state(build_model(cfg.model, 0), nnx.Param))
    assert all(not np.array_equal(after[k], start[k]) for k in decoder if k.endswith("kernel"))  # they trained
    rows = [json.loads(line) for line in (tmp_path / "memory" / "metrics.jsonl").read_text().splitlines()]
    logged = {k for row in rows for k in row if k.startswith("train/loss/")}
    assert logged == {"train/loss/next_token", "train/loss/next_token@blank_copy"}  # each term on its own


def test_objective_mix_sweep_expands(text_corpus):
    from memlab.config import load_module
    from memlab.sweep.spec import expand

    module = load_module(ROOT / "sweeps" / "memory_objective_mix.py", "sweep")
    sweep = module.memory_mix_sweep(data_path=text_corpus)
    sweep.source = ROOT / "sweeps" / "memory_objective_mix.py"
    points = expand(sweep)
    assert len(points) == 16
    weights = sorted({p.config.objective["next_token@blank_copy"] for p in points})
    assert weights == module.COPY_WEIGHTS and all(p.config.objective["next_token"] == 1.0 for p in points)
    shapes = {(p.config.data.chunk_len, p.config.model.d_model) for p in points}
    assert shapes == {(16, 64), (16, 128), (32, 64), (32, 128)}


@pytest.mark.slow
def test_a_bpe_corpus_reserves_the_ids_after_its_tokeniser(text_corpus, tmp_path):
    src = tmp_path / "docs"
    src.mkdir()
    for d in range(8):
        (src / f"doc{d}.txt").write_text("".join(f"doc {d} line {i} of the bpe corpus\n" for i in range(12)))
    bpe = prepare(str(src), tmp_path / "bpe", tokenizer="bpe", vocab_size=300, validation_fraction=0.25, progress=False)
    cfg = config(str(bpe.directory), "train.steps=2")
    vocab = json.loads((bpe.directory / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    assert vocab != TEXT_VOCAB and cfg.data.vocab_size == cfg.model.vocab_size == vocab + 2
    example = TextChunks(cfg.data, "train", seed=0)[0]
    assert example["reserved_ids"].tolist() == [vocab, vocab + 1] and example["inputs"].max() < vocab
    batch = {k: v[None] for k, v in example.items()}
    seen = np.asarray(passes.view("blank_copy", batch)["inputs"][0])
    assert seen[T // 2] == vocab and np.all(seen[T // 2 + 1 :] == vocab + 1)
    summary = train(cfg, tmp_path / "run")  # the copy pass on BPE ids trains end to end
    assert np.isfinite(summary["eval/loss/next_token@blank_copy"])
    with pytest.raises(ValueError, match="reserved_ids"):
        passes.view("blank_copy", {k: v for k, v in batch.items() if k != "reserved_ids"})


MIXER_KEYS = ("mixer", "mixer_heads", "chunk_len")


def saved_before_the_mixer_knobs(cfg) -> dict:
    """config.json as a run of `cfg` wrote it before model.mixer, mixer_heads and chunk_len existed."""
    saved = to_dict(cfg)
    for key in MIXER_KEYS:
        del saved["model"][key]
    return saved


def test_a_memory_run_saved_before_the_mixer_knobs_resumes_and_is_probed(text_corpus, tmp_path):
    cfg = config(text_corpus)  # chunks of L = 8, not the knob's default 64: model.chunk_len followed data.chunk_len
    run = RunDir(tmp_path / "old")
    run.config_path.write_text(json.dumps(saved_before_the_mixer_knobs(cfg)))
    check_resumable(run, to_dict(cfg))
    with pytest.raises(ConfigError, match="differs in model.mixer"):
        check_resumable(run, to_dict(config(text_corpus, "model.mixer=masked")))
    for encoder in ("run", "constant"):
        probe = probe_config(run.path, encoder)
        assert probe.model.chunk_len == L and probe.model.mixer == "attn"
