"""Is a fitted law identified by its points? One verdict, with reasons, for every law the analysis fits.

A multi-start fit always returns numbers, even through four points, across a phase transition or along a flat
line; the numbers are then meaningless (E = 1e-8, A in [17, 4.6e38]). These checks decide whether a law may be
reported as a law and drawn as a frontier:

- degrees of freedom: points - free parameters >= MIN_DOF (a 3-parameter law needs 5 points);
- bootstrap intervals: no parameter's interval spans more than MAX_INTERVAL_RATIO (hi/lo), except a floor E
  whose whole interval is negligible next to the data (no floor is a finding, not an unknown); a power law's A
  is judged at the data's geometric-mean x (A_ref), since A at x = 1 may be decades outside the data;
- goodness in log space: R² of log y >= MIN_R2_LOG and residual RMS of log y <= MAX_RESIDUAL_RMS
  (0.05 ≈ 5% typical error, well above run-to-run noise of final losses, ~1%);
- no phase transition: see `phase_transition`;
- not flat: y must move by more than FLAT_LOG_RANGE in log space, else there is nothing to scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._format import num

MIN_DOF = 2
MAX_INTERVAL_RATIO = 10.0
MIN_R2_LOG = 0.95
MAX_RESIDUAL_RMS = 0.05
FLAT_LOG_RANGE = 0.02
# A step: one interval holds more than STEP_SHARE of y's range and is STEP_ACCELERATION times steeper (in
# log-log) than the interval before it. A saturating power law only ever gets flatter with x, so an interval
# steeper than its predecessor is the signature of a transition, not of a law.
STEP_SHARE = 0.6
STEP_ACCELERATION = 3.0
# A floor E counts as "zero, identified" when its whole interval is below this fraction of the smallest y.
NEGLIGIBLE_FLOOR = 0.01
DIAGNOSTIC_BOOTSTRAP = 200


@dataclass
class Diagnostics:
    """How well a law is supported by its points; `identified` is False exactly when `reasons` say why."""

    n_points: int
    n_params: int
    r2_log: float | None = None
    residual_rms: float | None = None
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    bootstrap: int = 0
    reasons: list[str] = field(default_factory=list)

    @property
    def identified(self) -> bool:
        return not self.reasons

    @property
    def verdict(self) -> str:
        return "identified" if self.identified else "not identified: " + "; ".join(self.reasons)

    def to_dict(self) -> dict:
        return {
            "n_points": self.n_points,
            "n_params": self.n_params,
            "r2_log": self.r2_log,
            "residual_rms": self.residual_rms,
            "intervals": {k: list(v) for k, v in self.intervals.items()},
            "bootstrap": self.bootstrap,
            "identified": self.identified,
            "reasons": list(self.reasons),
        }


def log_goodness(y, predicted) -> tuple[float, float]:
    """(R², residual RMS) of log y against log predicted; R² is -inf when y has no spread at all."""
    log_y, log_p = np.log(np.asarray(y, float)), np.log(np.clip(np.asarray(predicted, float), 1e-300, None))
    residual = log_y - log_p
    ss_res, ss_tot = float(np.sum(residual**2)), float(np.sum((log_y - log_y.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else -np.inf)
    return r2, float(np.sqrt(np.mean(residual**2)))


def phase_transition(x, y) -> str | None:
    """ "phase transition between x=a and x=b" when one step between consecutive points (sorted by x) holds
    most of y's range and is much steeper than the interval before it; else None."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    span = float(y.max() - y.min())
    if len(x) < 3 or span <= 0:
        return None
    jumps = np.abs(np.diff(y))
    i = int(np.argmax(jumps))
    if jumps[i] <= STEP_SHARE * span or i == 0:
        return None  # a first-interval drop is what a steep saturating law looks like too
    log = (x > 0).all() and (y > 0).all()
    u, v = (np.log(x), np.log(y)) if log else (x, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        slopes = np.abs(np.diff(v) / np.diff(u))
    if not np.isfinite(slopes[i]) or slopes[i] > STEP_ACCELERATION * slopes[i - 1]:
        return f"phase transition between x={num(x[i])} and x={num(x[i + 1])} ({jumps[i] / span:.0%} of the change)"
    return None


def _interval_reasons(intervals: dict, y: np.ndarray) -> list[str]:
    reasons = []
    for name, (lo, hi) in intervals.items():
        if name == "A" and "A_ref" in intervals:
            continue  # judged at the data's centre (see PowerLawFit.x_ref), not at x = 1
        if not (np.isfinite(lo) and np.isfinite(hi)):
            reasons.append(f"bootstrap interval of {name} is not finite")
            continue
        if name == "E" and hi < NEGLIGIBLE_FLOOR * float(np.min(y)):
            continue
        if lo <= 0 or hi / lo > MAX_INTERVAL_RATIO:
            ratio = "unbounded" if lo <= 0 else f"a factor of {num(hi / lo, 2)}"
            reasons.append(f"bootstrap interval of {name} spans {ratio} ([{num(lo)}, {num(hi)}])")
    return reasons


def diagnose(
    x,
    y,
    predicted,
    *,
    n_params: int,
    intervals: dict | None = None,
    bootstrap: int = 0,
    one_axis: bool = True,
) -> Diagnostics:
    """Check a fitted law against its points. `x` is the one axis (for the step check; ignored unless
    `one_axis`), `predicted` the law at the points, `intervals` the parameters' bootstrap intervals (from
    `bootstrap` resamples; None when there were none, itself a reason)."""
    y = np.asarray(y, float)
    n = len(y)
    diag = Diagnostics(n_points=n, n_params=n_params, intervals=dict(intervals or {}), bootstrap=bootstrap)
    if n - n_params < MIN_DOF:
        diag.reasons.append(
            f"{n} points for {n_params} parameters ({n - n_params} degrees of freedom left, needs {MIN_DOF})"
        )
    if n == 0:
        return diag
    if float(np.ptp(np.log(y))) < FLAT_LOG_RANGE:
        diag.reasons.append(f"flat: y moves by {float(np.ptp(np.log(y))):.1%} across the points, nothing to scale")
    diag.r2_log, diag.residual_rms = log_goodness(y, predicted)
    if not diag.r2_log >= MIN_R2_LOG:
        diag.reasons.append(f"R² in log space {num(diag.r2_log, 3)} < {MIN_R2_LOG}")
    if not diag.residual_rms <= MAX_RESIDUAL_RMS:
        diag.reasons.append(f"residual RMS in log space {num(diag.residual_rms, 3)} > {MAX_RESIDUAL_RMS}")
    if one_axis:
        step = phase_transition(x, y)
        if step:
            diag.reasons.append(step)
    if intervals is None:
        diag.reasons.append("no bootstrap intervals")
    else:
        diag.reasons += _interval_reasons(intervals, y)
    return diag


def diagnose_power_law(x, y, fit, *, bootstrap: int = DIAGNOSTIC_BOOTSTRAP, seed: int = 0) -> Diagnostics:
    """`diagnose` for L = E + A·x^-α; runs `bootstrap` resamples when the fit carries no intervals."""
    from .power_law import fit_power_law

    x, y = np.asarray(x, float), np.asarray(y, float)
    intervals, n_boot = fit.ci, fit.bootstrap
    if intervals is None and bootstrap and np.unique(x).size >= 3:
        intervals, n_boot = fit_power_law(x, y, bootstrap=bootstrap, seed=seed).ci, bootstrap
    n_params = 3 if getattr(fit, "floor", True) else 2
    return diagnose(x, y, fit.predict(x), n_params=n_params, intervals=intervals, bootstrap=n_boot)


def diagnose_chinchilla(n_params, n_tokens, loss, fit, *, bootstrap: int = 0, seed: int = 0) -> Diagnostics:
    """`diagnose` for L(N, D) (5 parameters); a bootstrap is only run when asked, the Chinchilla refit being
    the expensive one."""
    from .chinchilla import fit_chinchilla

    intervals, n_boot = fit.ci, fit.bootstrap
    if intervals is None and bootstrap:
        intervals, n_boot = fit_chinchilla(n_params, n_tokens, loss, bootstrap=bootstrap, seed=seed).ci, bootstrap
    predicted = fit.predict(n_params, n_tokens)
    return diagnose(None, loss, predicted, n_params=5, intervals=intervals, bootstrap=n_boot, one_axis=False)


def diagnose_isoflop(fit, *, bootstrap: int = DIAGNOSTIC_BOOTSTRAP, seed: int = 0) -> Diagnostics:
    """IsoFLOP's two lines (log N_opt and log D_opt against log C, 2 parameters each) checked on the budgets
    that located a valley; intervals of a and b from resampling those budgets."""
    table = fit.table[fit.table["n_opt"].notna()]
    log_c = np.log(table["flops"].to_numpy(float))
    n_opt, d_opt = table["n_opt"].to_numpy(float), table["d_opt"].to_numpy(float)
    predicted_n = fit.n_opt(table["flops"].to_numpy(float))
    intervals = None
    if bootstrap and len(table) >= 3:
        rng = np.random.default_rng(seed)
        samples = []
        for _ in range(bootstrap):
            pick = rng.integers(0, len(table), len(table))
            if np.unique(log_c[pick]).size < 2:
                continue
            a = np.polyfit(log_c[pick], np.log(n_opt[pick]), 1)[0]
            b = np.polyfit(log_c[pick], np.log(d_opt[pick]), 1)[0]
            samples.append((a, b))
        if samples:
            lo, hi = np.percentile(np.array(samples), [2.5, 97.5], axis=0)
            intervals = {"a": (float(lo[0]), float(hi[0])), "b": (float(lo[1]), float(hi[1]))}
    diag = diagnose(
        None,
        n_opt,
        predicted_n,
        n_params=2,
        intervals=intervals,
        bootstrap=bootstrap if intervals else 0,
        one_axis=False,
    )
    # Exponents are judged by their spread, not by a ratio (a ≈ 0.5 ± 0.1 is fine; their sign is the point).
    diag.reasons = [r for r in diag.reasons if not r.startswith("bootstrap interval of") and not r.startswith("flat")]
    for name, (lo, hi) in (intervals or {}).items():
        if hi - lo > 0.5:
            diag.reasons.append(f"bootstrap interval of exponent {name} is wider than 0.5 ([{num(lo)}, {num(hi)}])")
    return diag
