"""Model families, one module per family; `build_model(model_config, seed)` builds the one `model.name` names.

    lm.py            decoder-only LM: a stack of sequence mixers with SwiGLU MLPs
    mixers/          the LM's sequence mixers, one module per mixer, each owning its one-token decoding
    encdec.py        full encoder-decoder on context QA: the baseline the slot memory compresses away
    slot_memory.py   the context compressed into k learned slots
    memory_model.py  one memory vector per chunk of text, read by the decoders of later chunks (and autoencoders)
    seq2seq.py       what the two encoder-decoder families share: attention between two sequences, blocks,
                     token I/O, the decoder and their base class
    layers.py        building blocks of every family (projections, norms, RoPE, SwiGLU, short convolution)

A family is an nnx.Module class registered in `memlab.registry.MODELS` (`@MODELS.register("lm")`) with
`__init__(cfg, *, rngs)`, the staticmethods `defaults()` (its `model.*` knobs, which `memlab.defaults` puts in
the config) and `check(cfg)` (ValueError for bad knobs; `memlab.validation` turns it into a ConfigError), and
`embedding_params()` and `forward_flops_per_example(shapes)` for accounting.

Parameters carry logical axis names as metadata; they are not placed on a mesh at creation (that is
`memlab.parallel`'s job), so eager sharding is switched off here.
"""

from __future__ import annotations

import flax
from flax import nnx

from memlab.models import bdh, encdec, lm, memory_model, slot_memory  # noqa: F401  (each registers itself)
from memlab.models.params import flat_params
from memlab.registry import MODELS

flax.config.update("flax_always_shard_variable", False)


def build_model(model_config, seed: int) -> nnx.Module:
    """The family `model_config.name` built from the config, its parameters drawn from `seed`."""
    return MODELS.get(model_config.name)(model_config, rngs=nnx.Rngs(params=seed))


def count_params(model: nnx.Module, trainable: frozenset[str] | None = None) -> dict[str, int]:
    """Total and non-embedding parameter counts (the latter is what scaling laws usually use), and how many of them
    train (the paths in `trainable`; None: all)."""
    sizes = {name: int(x.size) for name, x in flat_params(nnx.state(model, nnx.Param)).items()}
    total = sum(sizes.values())
    return {
        "params": total,
        "params_non_embedding": total - model.embedding_params(),
        "params_trainable": total if trainable is None else sum(sizes[name] for name in trainable),
    }


__all__ = ["MODELS", "build_model", "count_params"]
