"""Packing a slice of the token stream into one training example.

A window is `seq_len + 1` consecutive tokens of a split (documents back to back, each ending in EOS), cut
wherever it falls. Two modes:

    segments   documents keep to themselves: `segment_ids` (1, 2, ... within the window) so attention and the
               recurrent kernels reset at every boundary, `positions` restarting at 0 in each segment, and
               `token_mask` = 0 where the target already belongs to the next document (the EOS position)
    concat     plain concatenation: the model sees across boundaries, every target is scored
"""

from __future__ import annotations

import numpy as np

PACKING = ("segments", "concat")


def pack(tokens: np.ndarray, start: int, doc_starts: np.ndarray, mode: str) -> dict[str, np.ndarray]:
    """Example from `tokens` (seq_len + 1 ids read at stream offset `start`); `doc_starts` are the split's
    ascending document start offsets (the first is 0)."""
    tokens = tokens.astype(np.int32)
    example = {"inputs": tokens[:-1], "targets": tokens[1:]}
    if mode == "concat":
        return example
    if mode != "segments":
        raise ValueError(f"data.packing={mode!r} is not accepted; choose one of {', '.join(PACKING)}")
    offsets = np.arange(start, start + len(tokens))
    doc = np.searchsorted(doc_starts, offsets, side="right") - 1
    seg = (doc - doc[0] + 1).astype(np.int32)
    first = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])  # where each segment begins in the window
    positions = np.arange(len(tokens)) - np.repeat(first, np.diff(np.r_[first, len(tokens)]))
    example.update(segment_ids=seg[:-1], positions=positions[:-1].astype(np.int32),
                   token_mask=(seg[1:] == seg[:-1]).astype(np.float32))
    return example
