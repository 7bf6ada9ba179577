"""Cross-field checks on a resolved config, run before any compute is spent.

Each failure is a `ConfigError` naming the key, the value and what is accepted.
"""

from __future__ import annotations

from memlab import objectives
from memlab.data.tasks import TASKS
from memlab.errors import ConfigError
from memlab.parallel import parse_rules

CHOICES = {
    "train.schedule": ("cosine", "wsd", "constant"),
    "train.precision": ("float32", "bfloat16"),
    "logging.wandb_mode": ("auto", "offline", "online", "disabled"),
}
POSITIVE_INTS = (
    "model.d_model",
    "model.num_layers",
    "model.num_heads",
    "train.steps",
    "train.batch_size",
    "train.grad_accum",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.eval_every",
    "train.log_every",
    "eval.num_examples",
    "eval.batch_size",
    "data.prefetch",
)


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
        if key.split(".")[1] not in config[key.split(".")[0]]:  # a knob of some families only (bdh has no MLP)
            continue
        if not _get(config, key) > 0:
            raise ConfigError(f"{key}={_get(config, key)!r} must be > 0")
    if config.train.warmup_steps < 0:  # one >= train.steps is clipped when the schedule is built
        raise ConfigError(f"train.warmup_steps={config.train.warmup_steps} must be >= 0")
    if not 0 <= config.train.warmup_fraction < 1:
        raise ConfigError(
            f"train.warmup_fraction={config.train.warmup_fraction} must be in [0, 1) "
            "(a share of train.steps; 0 uses train.warmup_steps)"
        )
    if not 0 < config.train.decay_fraction <= 1:
        raise ConfigError(f"train.decay_fraction={config.train.decay_fraction} must be in (0, 1]")
    if config.train.batch_size % config.train.grad_accum:
        raise ConfigError(
            f"train.batch_size={config.train.batch_size} must be divisible by "
            f"train.grad_accum={config.train.grad_accum}"
        )
    if config.eval.num_examples < config.eval.batch_size:
        raise ConfigError(
            f"eval.num_examples={config.eval.num_examples} must be >= eval.batch_size={config.eval.batch_size}"
        )
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

    family = MODELS.get(model.name)  # a ConfigError naming the registered families
    try:
        family.check(model)
    except ValueError as err:
        raise ConfigError(str(err)) from None


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
    steps, early = config.train.get("curriculum_steps", 0), dict(config.train.get("curriculum_objective", {}))
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps < config.train.steps:
        raise ConfigError(
            f"train.curriculum_steps={steps!r} must be an integer in [0, train.steps={config.train.steps}): the "
            "steps trained on train.curriculum_objective before the objective takes over (0 = no curriculum)"
        )
    if steps and not early:
        raise ConfigError(
            f"train.curriculum_steps={steps} needs train.curriculum_objective, the weights of those steps (e.g. "
            "--set train.curriculum_objective.next_token@blank_copy=1)"
        )
    if early and not steps:
        raise ConfigError(
            f"train.curriculum_objective={early} is set but train.curriculum_steps=0, so it would never train; set "
            "the number of steps it trains for"
        )
    if steps:
        try:
            objectives.check(early)
        except ValueError as err:
            raise ConfigError(f"train.curriculum_objective: {err}") from None
