"""How full a memory is, read from its key-occupancy matrix M [K, K].

M is a second state written with the same rule, alpha, beta and forgets as the value state, but storing each
key as its own value (k -> k). With orthonormal keys under the delta rule M is exactly the projector onto the
stored keys; under the Hebbian rule it is sum(beta k k^T), so a key written twice counts twice, as it does in S.
It depends only on the keys, not on the value width, which is what bounds interference (d_key orthogonal
directions exist, whatever d_value is).

utilisation = trace(M) / d_key: the load factor, i.e. stored keys per key dimension (the N/d of the capacity
  study). Distinct orthonormal keys under the delta rule: count / d_key; Hebbian counts every write (times
  beta), so it can pass 1.
saturation = effective rank of M / d_key, in [0, 1]: the share of key space already carrying associations
  (effective rank = exp of the entropy of the normalised singular values; r for a rank-r projector). A new key
  overlaps the occupied part, and so disturbs what is stored there, roughly in proportion to it; at 1 every
  direction is taken and further writes can only interfere. Growing d_key keeps the rank and halves it.
"""

from __future__ import annotations

import numpy as np


def effective_rank(matrix: np.ndarray) -> float:
    """exp(entropy of singular values / their sum); 0 for the zero matrix."""
    sv = np.linalg.svd(np.asarray(matrix, np.float64), compute_uv=False)
    total = sv.sum()
    if total <= 0:
        return 0.0
    p = sv[sv > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def utilisation(occupancy: np.ndarray) -> float:
    return float(np.trace(np.asarray(occupancy, np.float64))) / occupancy.shape[0]


def saturation(occupancy: np.ndarray) -> float:
    return effective_rank(occupancy) / occupancy.shape[0]
