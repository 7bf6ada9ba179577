"""pallas_kernels: delta-rule family and mLSTM kernels (reference, chunked JAX and Pallas) behind one dispatching
API.

Standalone: imports nothing from memlab.
"""

from . import dispatch
from .api import delta_rule, linear_attention
from .chunked import chunked
from .mlstm_api import mlstm
from .mlstm_chunked import mlstm_chunked
from .mlstm_reference import mlstm_reference
from .reference import recurrent_reference

for _op in ("delta_rule", "linear_attention"):
    dispatch.register(_op, "reference", recurrent_reference)
    dispatch.register(_op, "chunked", chunked)
dispatch.register("mlstm", "reference", mlstm_reference)
dispatch.register("mlstm", "chunked", mlstm_chunked)

try:  # Pallas is part of jax, but keep the pure-JAX backends usable if its import ever fails.
    from .mlstm_pallas import mlstm_pallas
    from .pallas_delta import pallas_chunked

    for _op in ("delta_rule", "linear_attention"):
        dispatch.register(_op, "pallas", pallas_chunked)
    dispatch.register("mlstm", "pallas", mlstm_pallas)
except ImportError:  # pragma: no cover
    pass

__all__ = ["delta_rule", "linear_attention", "mlstm"]
