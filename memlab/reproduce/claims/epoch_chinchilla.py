"""Epoch AI's replication of Chinchilla's Approach 3 (Besiroglu, Erdil, Barnett and You 2024, "Chinchilla
Scaling: A replication attempt"): refit their 240 points with memlab's fit and compare with their estimates.

No training: the points are the (N, C, loss) triples Epoch extracted from Hoffmann et al.'s Figure 4, kept with
their checksum in reference_data/. A fit that cannot reproduce a published fit on the published data would make
every scaling law memlab fits suspect, so this claim checks the instrument itself.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd

from memlab.analysis.fits import fit_chinchilla
from memlab.analysis.tables import markdown_table
from memlab.errors import DataError
from memlab.registry import CLAIMS
from memlab.reproduce import checks
from memlab.reproduce.claim import Claim, Result
from memlab.reproduce.parts import Part, claim_verdict

DATA = Path(__file__).resolve().parents[3] / "reference_data" / "chinchilla_svg_extracted.csv"
# Epoch's published estimates and bootstrap standard errors (4,000 resamples), their Table 1.
EPOCH = {"A": 477.84, "B": 2143.86, "E": 1.817, "alpha": 0.347, "beta": 0.367}
EPOCH_SE = {"A": 124.52, "B": 1293.28, "E": 0.026, "alpha": 0.015, "beta": 0.021}
BOOTSTRAP = {"cpu": 200, "paper": 4000}
TOLERANCE_SE = 2.0  # |memlab - Epoch| within this many of Epoch's standard errors, for every parameter
ORDER = ("A", "B", "E", "alpha", "beta")


def epoch_points(path: Path = DATA) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D, loss) of the 240 points Epoch fitted: their 245 minus the 5 highest losses, D = C / (6 N). The file's
    checksum must be the one its README records, so a changed copy cannot pass for Epoch's data."""
    recorded = (path.parent / "README.md").read_text()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest not in recorded:
        raise DataError(f"{path}: sha256 {digest} is not the one recorded in {path.parent / 'README.md'}")
    df = pd.read_csv(path).sort_values("loss").iloc[:-5]
    n, c = df["Model Size"].to_numpy(), df["Training FLOP"].to_numpy()
    return n, c / (6 * n), df["loss"].to_numpy()


def compare(values: dict) -> tuple[dict, dict, str]:
    """(gap in Epoch SEs, within tolerance, verdict) of fitted `values` against Epoch's estimates."""
    z = {k: abs(values[k] - EPOCH[k]) / EPOCH_SE[k] for k in ORDER}
    held = {k: bool(z[k] <= TOLERANCE_SE) for k in ORDER}
    return z, held, claim_verdict(["reproduced" if h else "not reproduced" for h in held.values()])


def parts(values: dict, z: dict, held: dict) -> list[Part]:
    """One part per parameter: memlab's estimate within TOLERANCE_SE of Epoch's standard errors of Epoch's."""
    band = checks.Threshold.from_source(TOLERANCE_SE * 1.0, "Epoch AI 2024, Table 1: bootstrap standard errors")
    return [
        Part(
            name=k,
            criterion=f"|memlab - Epoch| <= {TOLERANCE_SE:g} of Epoch's standard errors",
            source_number=f"{_fmt(EPOCH[k])} ± {_fmt(EPOCH_SE[k])}",
            measured=_fmt(values[k]),
            conditions=(checks.measured(f"within {TOLERANCE_SE:g} SE", held[k], f"{z[k]:.2f} SE from Epoch's"),),
            checks=(band.check("in Epoch's standard errors"),),
        )
        for k in ORDER
    ]


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 10 else f"{value:.1f}"


@CLAIMS.register("epoch-chinchilla")
class EpochChinchilla(Claim):
    name = "epoch-chinchilla"
    title = "Chinchilla Approach 3 on Epoch AI's 240 points: memlab's fit against Epoch's estimates"
    source = "Epoch AI 2024 (Besiroglu et al.)"

    def evaluate(self, study, out: Path) -> Result:
        scale = study.scale
        n, d, loss = epoch_points()
        n_boot = BOOTSTRAP[scale]
        start = time.perf_counter()
        fit = fit_chinchilla(n, d, loss, bootstrap=n_boot, seed=0)
        seconds = time.perf_counter() - start
        values = fit.params()
        z, held, _ = compare(values)
        claim_parts = parts(values, z, held)
        rows = [
            [
                k,
                f"{_fmt(EPOCH[k])} ± {_fmt(EPOCH_SE[k])}",
                _fmt(values[k]),
                f"[{_fmt(fit.ci[k][0])}, {_fmt(fit.ci[k][1])}]",
                _fmt(fit.se[k]),
                f"{z[k]:.2f}",
                "yes" if held[k] else "no",
            ]
            for k in ORDER
        ]
        header = ["parameter", "Epoch ± SE", "memlab", "memlab 95% CI", "memlab SE", "|Δ| / Epoch SE", "within 2 SE"]
        table = markdown_table(header, rows)
        notes = [
            f"- {len(loss)} points (Epoch's 245 less the 5 highest losses), D = C / (6N); Huber (delta 1e-3) on log "
            f"loss, L-BFGS from Hoffmann's {fit.n_starts:,}-start grid, as Epoch did.",
            f"- Bootstrap: {n_boot} resamples at {scale} scale (Epoch used 4,000; `--scale paper` runs 4,000); the "
            "intervals are percentile intervals of the resampled refits. The verdict does not depend on them: it "
            "compares memlab's point estimates with Epoch's, in units of Epoch's standard errors.",
            "- Why this criterion: Epoch's SEs measure how far a refit can move on resampled data, so an estimate "
            "within 2 of them is one Epoch's own uncertainty cannot tell from theirs. A and B lie along a flat "
            "valley of the objective (their SEs are 26% and 60% of the value), so they pass more easily than E, "
            "alpha and beta, whose agreement is the stricter part of the test.",
            f"- Fit with {n_boot} resamples: {seconds:.0f} s on this machine.",
        ]
        return Result(
            claim=self.name,
            title=self.title,
            source=self.source,
            source_number=", ".join(f"{k} {_fmt(EPOCH[k])} ± {_fmt(EPOCH_SE[k])}" for k in ORDER),
            measured=", ".join(f"{k} {_fmt(values[k])}" for k in ORDER)
            + f" (largest gap {max(z.values()):.2f} Epoch SE, on {max(z, key=z.get)})",
            criterion=f"one part per parameter: within {TOLERANCE_SE:g} of Epoch's standard errors of Epoch's value",
            verdict=Result.verdict_of(claim_parts),
            scale=scale,
            command=self.command(scale),
            table=table,
            notes="\n".join(notes),
            details={
                "fit": fit.to_dict(),
                "epoch": EPOCH,
                "epoch_se": EPOCH_SE,
                "gap_in_epoch_se": z,
                "within": held,
                "bootstrap": n_boot,
                "fit_seconds": seconds,
            },
            parts=claim_parts,
        )
