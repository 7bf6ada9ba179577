"""An objective curriculum: the first `train.curriculum_steps` steps train on the mix `train.curriculum_objective`,
the rest on `objective` (Badger's: decoders first learn to read memories by copying, then also to predict).

Each mix is its own compiled step, so a pass that only one phase scores costs nothing in the other, and the run's
FLOPs follow the phases (memlab.train.run_dir.Compute). Evaluation always scores `objective`, the run's goal, so
its curves are comparable across the switch and with runs that have no curriculum.
"""

from __future__ import annotations

import ml_collections

MAIN, EARLY = "objective", "curriculum"


def mixes(config: ml_collections.ConfigDict) -> dict[str, dict]:
    """{phase: objective weights}: the main mix, and the curriculum's when the run has one."""
    out = {MAIN: dict(config.objective)}
    if config.train.get("curriculum_steps", 0):
        out[EARLY] = dict(config.train.curriculum_objective)
    return out


def phase(config: ml_collections.ConfigDict, step: int) -> str:
    """The phase whose mix trains optimizer step `step` (1-based)."""
    return EARLY if step <= config.train.get("curriculum_steps", 0) else MAIN
