"""Analysis: sweep results as DataFrames, scaling-law fits, plots and reports.

Reads only run directories (or W&B), never models or training code, so it runs anywhere the results are.
"""

from . import curves as _curves  # noqa: F401  (registers the `frame.curves` accessor)
from .axes import varied_axes
from .fits import Diagnostics, diagnose, fit_chinchilla, fit_isoflop, fit_power_law
from .laws import Law, diagnostics_table, fit_laws
from .report import write_report
from .runs import load_curves, load_runs
from .wandb_runs import load_wandb_runs

__all__ = [
    "Diagnostics",
    "Law",
    "diagnose",
    "diagnostics_table",
    "fit_chinchilla",
    "fit_isoflop",
    "fit_laws",
    "fit_power_law",
    "load_curves",
    "load_runs",
    "load_wandb_runs",
    "varied_axes",
    "write_report",
]
