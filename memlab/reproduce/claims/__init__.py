"""The registered claims, one module each; importing this package registers them, in this order (the order of
`memlab reproduce all`)."""

from memlab.reproduce.claims import (  # noqa: F401
    delta_mem,
    epoch_chinchilla,
    matrix_utilisation,
    memory_models,
    mqar_mixers,
    slot_efficiency,
    slow_weights,
)
