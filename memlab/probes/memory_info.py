"""How much of its input window a frozen embedding holds (research notes A.1 "Measuring memory information", A.3).

The probe is an ordinary memlab run: an autoencoder-mode memory model (memlab.models.memory_model) whose encoder is the
probed run's, frozen (`train.trainable = decoder/`, so the encoder, its own embedding included, stays bit-identical),
under a fresh 2-layer unrolled decoder of the same width trained to regenerate windows of the run's text from the
embedding alone. Its eval on held-out text gives the cross-entropy CE (nats per token), I_e = 1 - CE / ln V (the paper's
normalisation; V the tokeniser's ids, 257 for bytes with EOS) and the Hamming accuracy (argmax equals the input token,
no shift). The same probe on a constant embedding (`model.memory = "none"`: the pad vector, so the decoder learns the
token statistics and nothing else; not zero, which would leave the bias-free decoder's residual stream at zero and its
logits uniform) gives CE_null and the calibrated I_e' = 1 - CE / CE_null: on bytes I_e alone credits an empty embedding
with ~0.4 (notes A.3).

Encoders: a `memory_model` run's `encoder/` (either mode, its own summary), an attention `lm` run's trunk (its
embedding, blocks and final norm are memory_model.Encoder's, read at the penultimate position: a causal LM's last
position is never trained as a predictor), and the controls `untrained` (a fresh encoder of that config) and
`constant`. Each probe trains in `<workdir>/<encoder>-<digest of its config>/`, so an equal probe (the constant
control above all, shared by every probe of one configuration) is trained once and read back after.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import ml_collections

from memlab.config import apply_overrides, to_dict, validate
from memlab.data import manifest
from memlab.defaults import base_config
from memlab.errors import ConfigError
from memlab.models.mixers import parse_mixers
from memlab.train.checkpoint import run_config
from memlab.train.loop import train

ENCODERS = ("run", "untrained", "constant")
# the knobs of memory_model.Encoder that the LM's trunk has too (the same attention blocks)
SHARED_KNOBS = ("d_model", "num_heads", "mlp_ratio", "rope_theta", "qkv_conv", "conv_kernel", "copy_init")
LM_TRUNK = ("embed", "blocks", "final_norm")
WINDOW_KEY = {"text_chunks": "chunk_len", "text": "seq_len"}  # the window a run's encoder saw, by its task


def _memory_model_encoder(model: ml_collections.ConfigDict) -> tuple[dict, tuple[str, ...]]:
    """(memory_model knobs, train.init_map) of a memory_model run's encoder: its own knobs and sub-tree (its mixer
    too; runs saved before the mixer knobs used attention)."""
    knobs = {k: model[k] for k in (*SHARED_KNOBS, "encoder_layers", "summary", "compression")}
    knobs.update(mixer=model.get("mixer", "attn"), mixer_heads=model.get("mixer_heads", 1))
    return knobs, ("encoder->encoder",)


def _lm_encoder(model: ml_collections.ConfigDict) -> tuple[dict, tuple[str, ...]]:
    """(memory_model knobs, train.init_map) of an LM's trunk read at the penultimate position; only a plain
    attention stack is the encoder's architecture."""
    mixers = set(parse_mixers(model.mixers, model.num_layers))
    extras = {"attention_window": 0, "delta_mem": "", "lora_rank": 0}
    changed = [f"model.{k}={model[k]!r}" for k, v in extras.items() if model.get(k, v) != v]
    if mixers != {"attn"} or changed:
        raise ConfigError(
            f"probe-memory reads an lm run's trunk as a memory_model encoder (attention blocks): this run has "
            f"model.mixers={model.mixers!r}{''.join(', ' + c for c in changed)}; only plain attention stacks "
            "without windows or adapters are supported"
        )
    knobs = {k: model[k] for k in SHARED_KNOBS}
    return {**knobs, "encoder_layers": model.num_layers, "summary": "penultimate"}, tuple(
        f"{p}->encoder/{p}" for p in LM_TRUNK
    )


FAMILIES = {"memory_model": _memory_model_encoder, "lm": _lm_encoder}


def probe_config(
    run_dir: str | Path, encoder: str = "run", steps: int = 1000, overrides=()
) -> ml_collections.ConfigDict:
    """The locked config of the probe of `run_dir`'s encoder (or a control): text windows of the run's corpus and
    length, the run's vocabulary, its encoder's knobs, a 2-layer decoder; `overrides` (key=value) last."""
    if encoder not in ENCODERS:
        raise ConfigError(f"--encoder {encoder!r} is not accepted; choose one of {', '.join(ENCODERS)}")
    source = run_config(run_dir)  # a ConfigError if it is no run directory
    family, task = source.model.name, source.data.task
    if family not in FAMILIES:
        raise ConfigError(
            f"{run_dir} is a {family!r} run; probe-memory reads the encoder of {', '.join(FAMILIES)} runs"
        )
    if task not in WINDOW_KEY:
        raise ConfigError(
            f"{run_dir} trained on task {task!r}; probe-memory regenerates windows of prepared text (a run of "
            f"task {' or '.join(WINDOW_KEY)})"
        )
    knobs, init_map = FAMILIES[family](source.model)
    c = base_config(task="text", model="memory_model")
    c.data.update(
        path=source.data.path,
        seq_len=source.data[WINDOW_KEY[task]],
        packing="concat",
        vocab_size=source.model.vocab_size,
        verify=source.data.verify,
        seed=source.data.seed,
    )
    c.model.update(knobs)
    c.model.update(mode="autoencoder", num_chunks=1, num_layers=2, memory="none" if encoder == "constant" else "read")
    c.model.chunk_len = c.data.get_ref("seq_len")  # one chunk per window: a masked encoder is built for it
    c.objective = {"next_token": 1.0}
    c.train.update(
        steps=steps,
        batch_size=16,
        lr=2e-3,
        warmup_fraction=0.05,
        eval_every=steps,
        checkpoint_every=steps,
        keep_checkpoints=1,
        trainable=("decoder/",),
        precision=source.train.precision,
    )
    if encoder == "run":
        c.train.update(init_from=str(Path(run_dir).resolve()), init_map=init_map)
    c.eval.update(num_examples=128, batch_size=64)
    c.logging.update(
        wandb_mode=source.logging.wandb_mode,
        project=source.logging.project,
        group="probe_memory",
        progress=source.logging.progress,
    )
    apply_overrides(c, overrides)
    validate(c)
    c.lock()
    return c


def tokenizer_vocab(corpus: str) -> int:
    """V of I_e: the number of ids the corpus's tokeniser writes."""
    return int(manifest.load(corpus)["tokenizer"]["vocab_size"])


def _digest(config: ml_collections.ConfigDict) -> str:
    """Short hash of a probe's config: equal probes share a directory."""
    return hashlib.sha256(json.dumps(to_dict(config), sort_keys=True).encode()).hexdigest()[:10]


def _trained(config: ml_collections.ConfigDict, workdir: Path, encoder: str) -> tuple[Path, dict]:
    """(directory, summary) of the probe `config` trained in its own directory under `workdir`; a completed one
    is resumed at its last step, which trains nothing and keeps its eval."""
    path = workdir / f"{encoder}-{_digest(config)}"
    return path, train(config, path)


def probe_memory(
    run_dir: str | Path,
    encoder: str = "run",
    *,
    steps: int = 1000,
    workdir: str | Path | None = None,
    overrides=(),
    ce_null: float | None = None,
) -> dict:
    """Probe `run_dir`'s encoder (or the control `encoder`), write `memory_info.json` in `workdir` (default
    RUN_DIR/probe_memory for the run's encoder, RUN_DIR/probe_memory_<control> for a control) and return it.
    CE_null is `ce_null` if given, else the constant control's CE under the same settings (trained once)."""
    run_dir = Path(run_dir)
    workdir = (
        Path(workdir) if workdir else run_dir / ("probe_memory" if encoder == "run" else f"probe_memory_{encoder}")
    )
    config = probe_config(run_dir, encoder, steps, overrides)
    probe_dir, summary = _trained(config, workdir, encoder)
    ce = summary["eval/loss/next_token"]
    if ce_null is not None:
        null_from = "given"
    elif encoder == "constant":
        ce_null, null_from = ce, str(probe_dir)
    else:
        null_dir, null = _trained(probe_config(run_dir, "constant", steps, overrides), workdir, "constant")
        ce_null, null_from = null["eval/loss/next_token"], str(null_dir)
    source = run_config(run_dir)
    info = {
        "run": str(run_dir.resolve()),
        "family": source.model.name,
        "encoder": encoder,
        "summary": config.model.summary,
        "window": config.data.seq_len,
        "steps": steps,
        "ce": ce,
        "ce_null": ce_null,
        "I_e": 1.0 - ce / math.log(tokenizer_vocab(config.data.path)),  # reserved ids never occur in text
        "I_e_calibrated": 1.0 - ce / ce_null,
        "hamming": summary["eval/accuracy"],
        "probe_dir": str(probe_dir),
        "ce_null_from": null_from,
    }
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "memory_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
