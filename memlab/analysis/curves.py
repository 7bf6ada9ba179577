"""`frame.curves`: learning curves on demand for a DataFrame from `load_runs` / `load_wandb_runs`.

Curves are much bigger than the one-row summaries, so they are read only when asked for: from the "curve"
column when the loader attached one, otherwise from each row's run directory.
"""

from __future__ import annotations

import pandas as pd

from .runs import load_curves


@pd.api.extensions.register_dataframe_accessor("curves")
class CurvesAccessor:
    """`runs.curves["run name"]` → that run's metrics; `runs.curves.long()` → all of them stacked."""

    def __init__(self, frame: pd.DataFrame):
        self._frame = frame

    def _row(self, run: str) -> pd.Series:
        match = self._frame[self._frame["run"] == run]
        if match.empty:
            raise KeyError(f"no run named {run!r}; runs: {sorted(self._frame['run'].astype(str))}")
        return match.iloc[0]

    def __getitem__(self, run: str) -> pd.DataFrame:
        return self.of(self._row(run))

    @staticmethod
    def of(row: pd.Series) -> pd.DataFrame:
        """The metrics of one row (a Series from the runs frame)."""
        curve = row.get("curve")
        if isinstance(curve, pd.DataFrame):
            return curve
        run_dir = row.get("run_dir")
        if not isinstance(run_dir, str):
            raise ValueError(f"run {row.get('run')!r} has neither a curve nor a run directory")
        return load_curves(run_dir)

    def long(self, keys: tuple[str, ...] = ("run", "family")) -> pd.DataFrame:
        """Every run's metrics in one long frame, each record tagged with the row's `keys` columns."""
        parts = []
        for _, row in self._frame.iterrows():
            curve = self.of(row).copy()
            for key in keys:
                curve[key] = row.get(key)
            parts.append(curve)
        if not parts:
            return pd.DataFrame(columns=list(keys))
        return pd.concat(parts, ignore_index=True)
