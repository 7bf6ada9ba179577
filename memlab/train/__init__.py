"""Training: optimizer, jit-compiled steps, the loop, checkpoints, run directory, FLOPs, W&B."""
