"""memlab: scaling-law experiments on memory architectures for language models.

The map (the README's layout section has it too). Dependencies point one way, checked by tests/test_layout.py:

    errors, registry        the bottom: user-fixable errors; name -> member registries (models, mixers, tasks,
                            objectives) that members register themselves in
    config, defaults, validation, objectives, parallel
    models/ (mixers/), data/ (tasks/)    the families and the data, registered by name
    train/                  one run end to end (uses models, data, objectives, parallel)
    sweep/                  many runs, as `memlab train` processes
    analysis/               run directories -> tables, fits, plots (never imports models or train)
    store/, studies/        the associative store; study-specific analysis, probes and commands
    cli, entry              the `memlab` command, each area registering its subcommands
"""
