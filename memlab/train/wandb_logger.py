"""Weights & Biases mirror of metrics.jsonl.

Always on: offline by default (files under <run dir>/wandb), online when the user is logged in (an API key in
the environment or a W&B entry in netrc) or asks for it with WANDB_MODE / logging.wandb_mode; `disabled` turns
the mirror off (metrics.jsonl is written regardless). The key itself is
never read or written by memlab. The run id is kept in the checkpoint so a resumed run continues the same W&B run.
"""

from __future__ import annotations

import netrc
import os
import secrets
from pathlib import Path


def logged_in() -> bool:
    """Whether W&B credentials exist (presence only; the key is never read into memlab)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc(os.environ.get("NETRC")).hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def resolve_mode(configured: str) -> str:
    """An explicit logging.wandb_mode (offline | online | disabled) is used as set. The default, 'auto', follows
    WANDB_MODE when it is set, else goes online for a logged-in user and offline otherwise."""
    if configured != "auto":
        return configured
    return os.environ.get("WANDB_MODE") or ("online" if logged_in() else "offline")


class WandbLogger:
    def __init__(self, logging_config, run_dir: Path, config_dict: dict, run_id: str | None, is_main: bool):
        import wandb

        self.run = None
        self.run_id = run_id or os.environ.get("WANDB_RUN_ID") or secrets.token_hex(6)  # a W&B agent sets it
        self.mode = resolve_mode(logging_config.wandb_mode)
        if not is_main or self.mode == "disabled":
            return
        self.run = wandb.init(
            project=logging_config.project, entity=logging_config.entity or None,
            group=logging_config.group or None, tags=list(logging_config.tags) or None,
            name=logging_config.run_name or run_dir.name, id=self.run_id, resume="allow", mode=self.mode,
            dir=str(run_dir), config=config_dict,
            settings=wandb.Settings(silent=True, console="off", save_code=False, x_disable_stats=True),
        )

    def log(self, row: dict) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in row.items() if k != "step" and v is not None}, step=row["step"])

    def summary(self, fields: dict) -> None:
        if self.run is not None:
            self.run.summary.update({k: v for k, v in fields.items() if isinstance(v, (int, float, str))})

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
