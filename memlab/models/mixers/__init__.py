"""Sequence mixers, chosen per layer by `model.mixers`.

A mixer maps [B, T, d_model] -> [B, T, d_model] causally. Each registers itself under a name with
`register_mixer`; the LM looks names up here, so a new mixer plugs in without touching the LM. A mixer class
provides `forward_flops_per_token(cfg, seq_len)` (analytic, forward only) for compute accounting and
`state_size(cfg, seq_len)` (numbers a sequence carries when decoding) for memory accounting.
"""

from __future__ import annotations

from typing import Callable

MIXERS: dict[str, type] = {}


def register_mixer(name: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        if name in MIXERS:
            raise ValueError(f"mixer '{name}' registered twice")
        MIXERS[name] = cls
        return cls
    return wrap


def get_mixer(name: str) -> type:
    if name not in MIXERS:
        raise KeyError(f"unknown mixer '{name}'; registered mixers: {', '.join(sorted(MIXERS))}")
    return MIXERS[name]


def parse_mixers(spec: str, num_layers: int) -> list[str]:
    """'attn' -> one name for every layer; 'gdn,gdn,attn' -> one name per layer (length must match)."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if len(names) == 1:
        return names * num_layers
    if len(names) != num_layers:
        raise ValueError(f"model.mixers lists {len(names)} mixers ({spec!r}) but model.num_layers={num_layers}; "
                         "give one name for all layers or exactly one per layer")
    return names


from memlab.models.mixers import attn, conv, deltanet, gdn, hebbian, mlstm  # noqa: E402,F401  (each registers itself)
