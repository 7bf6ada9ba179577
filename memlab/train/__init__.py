"""Training: `memlab train` end to end.

loop.py        train(): build the model, state and data from a config, resume, then the flat step loop
step.py        the loss, the jit-compiled train and eval steps, the optimizer and its learning-rate schedule
checkpoint.py  orbax save/restore of train state + data position; a trained model back from its run directory
run_dir.py     the run directory (config.json + stamps, metrics.jsonl, summary.json) and FLOPs accounting
monitor.py     the W&B mirror of the metrics and the live progress display
commands.py    the `memlab train` and `memlab generate` commands
"""
