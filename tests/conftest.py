"""Shared fixtures: W&B stays offline and never sees a key; tiny configs keep training tests to seconds."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.pop("WANDB_API_KEY", None)

TINY = [
    "data.vocab_size=64", "data.seq_len=32", "data.num_kv_pairs=4",
    "model.d_model=32", "model.num_heads=2", "model.num_layers=2", "model.qkv_conv=False",  # plain transformer
    "train.steps=20", "train.warmup_steps=2", "train.batch_size=8", "train.eval_every=10",
    "train.checkpoint_every=10", "train.log_every=5", "eval.num_examples=32", "eval.batch_size=16",
    "logging.wandb_mode=disabled", "logging.progress=False",
]


@pytest.fixture
def tiny_config():
    """Build a resolved MQAR config from the tiny defaults plus extra `key=value` overrides."""
    from memlab.config import load_config

    def make(*overrides: str):
        return load_config(ROOT / "experiments" / "mqar.py", [*TINY, *overrides])
    return make


def memlab_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "memlab.cli", *args]
