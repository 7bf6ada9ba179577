"""Scaling-law fits: saturating power law, Chinchilla Approach 3 and IsoFLOP (Approach 2).

Pure NumPy/JAX on arrays of run results; never imports models or training code.
"""

from .chinchilla import ChinchillaFit, fit_chinchilla
from .diagnostics import Diagnostics, diagnose, diagnose_power_law, phase_transition
from .isoflop import IsoFLOPFit, fit_isoflop
from .power_law import PowerLawFit, fit_power_law, fit_pure_power_law

__all__ = [
    "ChinchillaFit",
    "Diagnostics",
    "IsoFLOPFit",
    "PowerLawFit",
    "diagnose",
    "diagnose_power_law",
    "fit_chinchilla",
    "fit_isoflop",
    "fit_power_law",
    "fit_pure_power_law",
    "phase_transition",
]
