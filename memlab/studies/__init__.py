"""Study-specific code, one package per study: its analysis of run directories, its probes of trained models and
the CLI commands that run them (registered in the package's `commands.py`)."""
