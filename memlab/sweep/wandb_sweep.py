"""W&B sweeps: the sweep's points exported as a W&B grid sweep whose command runs one point by name.

W&B hands each agent a point name (`--point=NAME`); `memlab sweep-point` expands the same sweep file and trains
that point under DIR/NAME. The run joins the W&B run the agent created (WANDB_RUN_ID is honoured).
"""

from __future__ import annotations

from pathlib import Path

from memlab.sweep.spec import Point, Sweep


def wandb_sweep_config(sweep: Sweep, points: list[Point], workdir: Path, metric: str = "eval/loss") -> dict:
    """A grid over point names: W&B schedules, and the sweep file stays the one definition of every point."""
    return {
        "name": sweep.name,
        "method": "grid",
        "metric": {"name": metric, "goal": "maximize" if "accuracy" in metric else "minimize"},
        "parameters": {"point": {"values": [p.name for p in points]}},
        "command": [
            "${env}",
            "${interpreter}",
            "-m",
            "memlab.cli",
            "sweep-point",
            str(sweep.source),
            "--workdir",
            str(Path(workdir).resolve()),
            "${args}",
        ],
    }


def create_wandb_sweep(config: dict, *, project: str, entity: str | None) -> str:
    """Register the sweep with W&B; its id."""
    import wandb

    return wandb.sweep(config, project=project, entity=entity)


def run_agent(sweep_id: str, *, project: str | None, entity: str | None, count: int | None) -> None:
    """Run `count` points (all if None) that the W&B sweep hands this agent."""
    import wandb

    wandb.agent(sweep_id, project=project, entity=entity, count=count)
