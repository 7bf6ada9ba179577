"""orbax checkpoints of the train state, the grain iterator position and run metadata (W&B run id).

Saves are asynchronous. orbax writes each step to a temporary directory and renames it when complete, so a
process killed mid-save leaves no listed checkpoint. A listed checkpoint that fails to restore (corrupted
files) is reported and the next older one is tried.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import grain
import orbax.checkpoint as ocp

log = logging.getLogger("memlab")


class Checkpointer:
    def __init__(self, directory: Path, *, keep: int):
        self.directory = directory.resolve()
        self.quarantine = self.directory.parent / "corrupt_checkpoints"
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()})

    def save(self, step: int, state: dict, data_iterator, meta: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator),
            meta=ocp.args.JsonSave(meta)), force=True)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore_latest(self, abstract_state: dict, data_iterator) -> tuple[int, dict, dict] | None:
        """(step, state, meta) from the newest readable checkpoint, or None if there is none.

        `data_iterator` is moved to the saved position in place.
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    data=grain.checkpoint.CheckpointRestore(data_iterator),
                    meta=ocp.args.JsonRestore()))
            except Exception as err:  # orbax/tensorstore raise many types for damaged files
                log.warning("checkpoint at step %d is unreadable (%s: %s); moved to %s, trying an older one",
                            step, type(err).__name__, str(err).splitlines()[0][:200], self.quarantine)
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

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
