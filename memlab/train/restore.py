"""A trained model back from its run directory: the saved config, then the parameters of a checkpoint.

Only JSON (config.json) and orbax array files are read, never pickles. The optimizer state is not loaded.
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from memlab.config import ConfigError, from_dict
from memlab.models import build_model
from memlab.train.run_dir import RunDir


def run_config(run_dir: str | Path):
    """The locked config a run was trained with (its config.json, without the stamps)."""
    saved = RunDir(run_dir).read_config()
    if saved is None:
        raise ConfigError(f"{run_dir} is not a run directory: it has no config.json")
    saved.pop("stamps", None)
    return from_dict(saved)


def load_model(run_dir: str | Path, step: int | None = None) -> tuple[nnx.Module, object, int]:
    """(model with the checkpoint's parameters, config, step) for the newest checkpoint or `step`."""
    config = run_config(run_dir)
    directory = RunDir(run_dir).checkpoint_dir.resolve()
    with ocp.CheckpointManager(directory, item_handlers={"state": ocp.PyTreeCheckpointHandler()}) as manager:
        steps = sorted(manager.all_steps())
        if not steps:
            raise ConfigError(f"{run_dir} has no checkpoint to load (checkpoints/ is empty or missing)")
        step = steps[-1] if step is None else step
        if step not in steps:
            raise ConfigError(f"{run_dir} has no checkpoint at step {step}; saved steps: {steps}")
        graphdef, abstract = nnx.split(nnx.eval_shape(lambda: build_model(config.model, config.train.seed)),
                                       nnx.Param)
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # whatever mesh it was trained on
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore({"params": target}, partial_restore=True,
                                         restore_args=ocp.checkpoint_utils.construct_restore_args({"params": target}))))
    return nnx.merge(graphdef, restored["state"]["params"]), config, step
