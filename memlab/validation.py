"""Cross-field checks on a resolved config, run before any compute is spent.

Each failure is a `ConfigError` naming the key, the value and what is accepted.
"""

from __future__ import annotations

from memlab.errors import ConfigError
from memlab import objectives
from memlab.data.tasks import TASKS
from memlab.parallel import parse_rules

CHOICES = {
    "train.schedule": ("cosine", "wsd", "constant"),
    "train.precision": ("float32", "bfloat16"),
    "logging.wandb_mode": ("auto", "offline", "online", "disabled"),
}
POSITIVE_INTS = ("model.d_model", "model.num_layers", "model.num_heads", "train.steps", "train.batch_size",
                 "train.grad_accum", "train.checkpoint_every", "train.keep_checkpoints", "train.eval_every",
                 "train.log_every", "eval.num_examples", "eval.batch_size", "data.prefetch")


def _get(config, key):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def check(config) -> None:
    for key, accepted in CHOICES.items():
        if _get(config, key) not in accepted:
            raise ConfigError(f"{key}={_get(config, key)!r} is not accepted; choose one of {', '.join(accepted)}")
    for key in POSITIVE_INTS:
        value = _get(config, key)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}={value!r} must be a positive integer")
    for key in ("train.lr", "model.mlp_ratio"):
        if not _get(config, key) > 0:
            raise ConfigError(f"{key}={_get(config, key)!r} must be > 0")
    if config.train.warmup_steps < 0:  # one >= train.steps is clipped when the schedule is built
        raise ConfigError(f"train.warmup_steps={config.train.warmup_steps} must be >= 0")
    if not 0 <= config.train.warmup_fraction < 1:
        raise ConfigError(f"train.warmup_fraction={config.train.warmup_fraction} must be in [0, 1) "
                          "(a share of train.steps; 0 uses train.warmup_steps)")
    if not 0 < config.train.decay_fraction <= 1:
        raise ConfigError(f"train.decay_fraction={config.train.decay_fraction} must be in (0, 1]")
    if config.train.batch_size % config.train.grad_accum:
        raise ConfigError(f"train.batch_size={config.train.batch_size} must be divisible by "
                          f"train.grad_accum={config.train.grad_accum}")
    if config.eval.num_examples < config.eval.batch_size:
        raise ConfigError(f"eval.num_examples={config.eval.num_examples} must be >= eval.batch_size={config.eval.batch_size}")
    _check_model(config.model)
    _check_data(config)
    _check_objective(config)
    for axis in ("data", "fsdp", "tensor"):
        size = config.mesh[axis]
        if not (size == -1 or size >= 1):
            raise ConfigError(f"mesh.{axis}={size} must be a positive size or -1 (fill with the remaining devices)")
    parse_rules(config.mesh.rules)  # a MeshError (a ConfigError) names the bad rule


def _check_model(model) -> None:
    from memlab.models import MODELS
    from memlab.models.mixers import MIXERS, parse_mixers

    if model.name not in MODELS:
        raise ConfigError(f"model.name={model.name!r} is not a registered model; choose one of {', '.join(sorted(MODELS))}")
    if "mixers" in model:
        try:
            names = parse_mixers(model.mixers, model.num_layers)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        unknown = sorted(set(n for n in names if n not in MIXERS))
        if unknown:
            raise ConfigError(f"model.mixers={model.mixers!r}: unknown mixer(s) {unknown}; "
                              f"registered mixers: {', '.join(sorted(MIXERS))}")
        if "mlstm" in names:
            width = int(model.mlstm_proj_factor * model.d_model)
            if width < model.num_heads or width % model.num_heads:
                raise ConfigError(f"model.mlstm_proj_factor={model.mlstm_proj_factor} gives the mlstm width "
                                  f"{width} = factor x model.d_model={model.d_model}, which must be a positive "
                                  f"multiple of model.num_heads={model.num_heads}")
    if model.d_model % model.num_heads or (model.d_model // model.num_heads) % 2:
        raise ConfigError(f"model.d_model={model.d_model} must split into model.num_heads={model.num_heads} "
                          "heads of even width (RoPE rotates pairs)")


def _check_data(config) -> None:
    try:
        TASKS.get(config.data.task).check(config.data)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _check_objective(config) -> None:
    try:
        objectives.check(dict(config.objective))
    except ValueError as err:
        raise ConfigError(f"objective: {err}") from None
