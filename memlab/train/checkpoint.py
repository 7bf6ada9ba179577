"""orbax checkpoints: the train state, the grain iterator position and run metadata (the W&B run id) saved and
restored by training, and a trained model loaded back from its run directory (for generate and the probes).

Saves are asynchronous. orbax writes each step to a temporary directory and renames it when complete, so a
process killed mid-save leaves no listed checkpoint. A listed checkpoint that fails to restore (corrupted
files) is reported, moved aside, and the next older one is tried. Loading a model reads only JSON (config.json)
and orbax array files, never pickles, and skips the optimizer state.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from memlab.config import from_dict
from memlab.errors import ConfigError
from memlab.models import build_model
from memlab.train.run_dir import RunDir

log = logging.getLogger("memlab")


class Checkpointer:
    """The checkpoints of a run in training: `save` each checkpoint step, `restore_latest` on (re)start."""

    def __init__(self, directory: Path, *, keep: int):
        self.directory = directory.resolve()
        self.quarantine = self.directory.parent / "corrupt_checkpoints"
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "data": grain.checkpoint.CheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            },
        )

    def save(self, step: int, state: dict, data_iterator: grain.DatasetIterator, meta: dict) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(data_iterator),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore_latest(
        self, abstract_state: dict, data_iterator: grain.DatasetIterator
    ) -> tuple[int, dict, dict] | None:
        """(step, state, meta) from the newest readable checkpoint, or None if there is none.

        `data_iterator` is moved to the saved position in place.
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state),
                        data=grain.checkpoint.CheckpointRestore(data_iterator),
                        meta=ocp.args.JsonRestore(),
                    ),
                )
            except Exception as err:  # orbax/tensorstore raise many types for damaged files
                log.warning(
                    "checkpoint at step %d is unreadable (%s: %s); moved to %s, trying an older one",
                    step,
                    type(err).__name__,
                    str(err).splitlines()[0][:200],
                    self.quarantine,
                )
                self._quarantine(step)
                continue
            return step, restored["state"], restored["meta"]
        return None

    def _quarantine(self, step: int) -> None:
        """Move a damaged checkpoint out of the way (kept for inspection) so training can save that step again."""
        self.quarantine.mkdir(exist_ok=True)
        target = self.quarantine / str(step)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(self.directory / str(step)), target)
        self.manager.reload()

    def close(self) -> None:
        """Wait for the pending asynchronous save, then release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def run_config(run_dir: str | Path) -> ml_collections.ConfigDict:
    """The locked config a run was trained with (its config.json, without the stamps)."""
    saved = RunDir(run_dir).read_config()
    if saved is None:
        raise ConfigError(f"{run_dir} is not a run directory: it has no config.json")
    saved.pop("stamps", None)
    return from_dict(saved)


def checkpoint_step(run_dir: str | Path, step: int | None = None) -> int:
    """`step` if `run_dir` holds a checkpoint there, else its newest one (step None); ConfigError if it has none."""
    run_config(run_dir)  # a ConfigError if it is no run directory
    directory = RunDir(run_dir).checkpoint_dir.resolve()
    with ocp.CheckpointManager(directory, item_handlers={"state": ocp.PyTreeCheckpointHandler()}) as manager:
        steps = sorted(manager.all_steps())
    if not steps:
        raise ConfigError(f"{run_dir} has no checkpoint to load (checkpoints/ is empty or missing)")
    if step is not None and step not in steps:
        raise ConfigError(f"{run_dir} has no checkpoint at step {step}; saved steps: {steps}")
    return steps[-1] if step is None else step


def _abstract_model(config: ml_collections.ConfigDict) -> tuple[nnx.GraphDef, nnx.State]:
    return nnx.split(nnx.eval_shape(lambda: build_model(config.model, config.train.seed)), nnx.Param)


def abstract_params_of(run_dir: str | Path) -> nnx.State:
    """The shapes and dtypes of the parameters of the model a run directory trained (nothing is read but JSON)."""
    return _abstract_model(run_config(run_dir))[1]


def load_model(run_dir: str | Path, step: int | None = None) -> tuple[nnx.Module, ml_collections.ConfigDict, int]:
    """(model with the checkpoint's parameters, config, step) for the newest checkpoint or `step`."""
    config = run_config(run_dir)
    step = checkpoint_step(run_dir, step)
    graphdef, abstract = _abstract_model(config)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # whatever mesh it was trained on
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)
    directory = RunDir(run_dir).checkpoint_dir.resolve()
    with ocp.CheckpointManager(directory, item_handlers={"state": ocp.PyTreeCheckpointHandler()}) as manager:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    {"params": target},
                    partial_restore=True,
                    restore_args=ocp.checkpoint_utils.construct_restore_args({"params": target}),
                )
            ),
        )
    return nnx.merge(graphdef, restored["state"]["params"]), config, step
