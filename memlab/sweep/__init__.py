"""Sweeps: a sweep file names a base experiment and the points to run; launchers run each as `memlab train`.

A sweep file (sweeps/*.py) defines `get_sweep()` returning a `Sweep`. Points are dicts of dotted config keys
(and `@labels`: values used for naming and derivation that are not config keys), built with the helpers in
`memlab.sweep.axes`.
"""

from memlab.sweep.axes import chain, grid, ladder, points, product, zipped
from memlab.sweep.spec import Point, Sweep, expand, load_sweep

__all__ = ["Sweep", "Point", "expand", "load_sweep", "grid", "zipped", "points", "product", "chain", "ladder"]
