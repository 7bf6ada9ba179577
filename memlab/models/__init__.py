"""Model families. `build_model(model_config, seed)` looks `model.name` up in the registry.

Parameters carry logical axis names as metadata; they are not placed on a mesh at creation (that is
`memlab.parallel`'s job), so eager sharding is switched off here.
"""

from __future__ import annotations

import flax
import jax
from flax import nnx

from memlab.models.registry import MODEL_DEFAULTS, MODELS, register_model
from memlab.models import lm  # noqa: F401  (registers "lm")
from memlab.models import encdec, slot_memory  # noqa: F401  (register "encdec", "slot_memory")

flax.config.update("flax_always_shard_variable", False)


def build_model(model_config, seed: int) -> nnx.Module:
    if model_config.name not in MODELS:
        raise KeyError(f"unknown model.name '{model_config.name}'; registered models: {', '.join(sorted(MODELS))}")
    return MODELS[model_config.name](model_config, nnx.Rngs(params=seed))


def count_params(model: nnx.Module) -> dict[str, int]:
    """Total and non-embedding parameter counts (the latter is what scaling laws usually use)."""
    total = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return {"params": int(total), "params_non_embedding": int(total - model.embedding_params())}


__all__ = ["build_model", "count_params", "register_model", "MODELS", "MODEL_DEFAULTS"]
