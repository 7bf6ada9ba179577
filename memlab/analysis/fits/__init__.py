"""Scaling-law fits: saturating power law, Chinchilla Approach 3 and IsoFLOP (Approach 2).

Pure NumPy/JAX on arrays of run results; never imports models or training code.
"""

from .chinchilla import ChinchillaFit, fit_chinchilla
from .isoflop import IsoFLOPFit, fit_isoflop
from .power_law import PowerLawFit, fit_power_law

__all__ = ["ChinchillaFit", "IsoFLOPFit", "PowerLawFit", "fit_chinchilla", "fit_isoflop", "fit_power_law"]
