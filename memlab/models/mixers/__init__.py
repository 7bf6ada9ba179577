"""Sequence mixers, chosen per layer by `model.mixers`: one module per mixer, each owning its decoding.

A mixer maps [B, T, d_model] -> [B, T, d_model] causally. Its module registers the class in
`memlab.registry.MIXERS` (`@MIXERS.register("gdn")`); this package imports every member so that they register,
and the LM looks names up there, so a new mixer plugs in without touching the LM. A mixer class provides:

    __init__(cfg, *, rngs, dtype), __call__(x, *, positions, segment_ids)   the parallel forward
    init_cache(batch_size, max_len), step(x, cache, *, position)             one-token decoding, equal to it
    forward_flops_per_token(cfg, seq_len)   analytic forward FLOPs, for compute accounting
    state_size(cfg, seq_len)                numbers a sequence carries when decoding, for memory accounting
    check(cfg) (optional)                   ValueError for knobs the mixer cannot run with

attn.py, conv.py and mlstm.py hold whole mixers; gdn.py, deltanet.py and hebbian.py subclass the block they
share in matrix_block.py; ttt_linear.py and titans.py subclass its learned-initial-memory form in
fast_weights.py. masked.py (Badger's masked mixer) is built for one sequence length, which the config alone does not
give, so it is not registered: memory_model builds it and hands it to `lm.Block`.
"""

from __future__ import annotations

from memlab.models.mixers import (  # noqa: F401  (each registers itself)
    attn,
    conv,
    deltanet,
    gdn,
    hebbian,
    mlstm,
    titans,
    ttt_linear,
)
from memlab.registry import MIXERS


def parse_mixers(spec: str, num_layers: int) -> list[str]:
    """'attn' -> one name for every layer; 'gdn,gdn,attn' -> one name per layer (length must match)."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if len(names) == 1:
        return names * num_layers
    if len(names) != num_layers:
        raise ValueError(
            f"model.mixers lists {len(names)} mixers ({spec!r}) but model.num_layers={num_layers}; "
            "give one name for all layers or exactly one per layer"
        )
    return names


__all__ = ["MIXERS", "parse_mixers"]
