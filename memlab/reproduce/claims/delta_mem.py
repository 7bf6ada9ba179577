"""δ-mem (declare-lab, arXiv 2605.12357): an 8 x 8 delta-rule state per attention layer, read through low-rank
corrections to the query and output projections of a frozen backbone, gives it memory it did not have (1.31x on
MemoryAgentBench, 1.20x on LoCoMo, general skills kept) with only small adapters trained.

The anchor's benchmarks keep the context in the prompt, so its ratios mix attention and state. Here the test is
memory beyond the window: a backbone whose attention is limited to W-token windows is frozen, facts sit in earlier
windows, and the question comes in the last one (memlab/studies/delta_mem/protocol.py). The backbone sits near
chance there, so the ratio to it is reported beside the paper's but the verdict reads the share of the
backbone -> oracle gap closed (the oracle attends over the whole episode).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from memlab.analysis.runs import load_curves
from memlab.analysis.tables import frame_markdown
from memlab.registry import CLAIMS
from memlab.reproduce import checks
from memlab.reproduce.claim import Claim, Result, details_value
from memlab.reproduce.intervals import difference, rate
from memlab.reproduce.ladder import no_ladder
from memlab.reproduce.parts import Part
from memlab.studies.delta_mem.protocol import SCALES, stages
from memlab.studies.delta_mem.report import measure
from memlab.sweep.estimate import estimate
from memlab.sweep.stages import Study
from memlab.train.checkpoint import run_config

PAPER_RATIO = 1.31  # MemoryAgentBench, frozen Qwen3-4B -> + δ-mem
GAP_SHARE = 0.5  # share of the backbone -> oracle gap TSW must close (a threshold relative to the two controls)
MAX_TRAINABLE = 0.02  # share of the parameters trained
NO_HARM = 0.01  # relative change allowed in in-window recall and bits per byte: memlab's, not the source's
ORDER = ["backbone", "retrieval", "lora", "tsw", "ssw", "msw", "tsw zeroed", "ssw zeroed", "msw zeroed", "oracle"]
SCALE_AXIS = "backbone width d_model"


@CLAIMS.register("delta-mem")
class DeltaMem(Claim):
    name = "delta-mem"
    title = "δ-mem: a tiny delta-rule state gives a frozen LM memory beyond its window"
    source = "δ-mem (declare-lab, arXiv 2605.12357)"
    evaluation_work = "every model scored on the evaluation episodes and on text (forward passes only)"

    def stages(self, scale: str) -> list:
        return stages(SCALES[scale])

    def evaluate(self, study: Study, out: Path) -> Result:
        setting = SCALES[study.scale]
        rows = measure(study, setting)
        means = rows.drop(columns=["run_dir"]).groupby("model", sort=False).mean(numeric_only=True)
        means = means.reindex([m for m in ORDER if m in means.index])
        backbone, oracle = means.loc["backbone"], means.loc["oracle"]
        gap = oracle["beyond"] - backbone["beyond"]
        closed = (means["beyond"] - backbone["beyond"]) / gap if gap > 0 else means["beyond"] * float("nan")
        tsw = means.loc["tsw"]
        ratio = tsw["beyond"] / backbone["beyond"] if backbone["beyond"] > 0 else float("inf")
        table = means.assign(gap_closed=closed, ratio_to_backbone=means["beyond"] / backbone["beyond"])
        parts = _parts(study, setting, rows, means, closed)
        share = tsw["params_trainable"] / tsw["params"]
        harm = {k: tsw[k] / backbone[k] - 1 for k in ("in-window", "text")}
        return Result(
            claim=self.name,
            title=self.title,
            source=self.source,
            source_number=(
                f"{PAPER_RATIO}x the frozen backbone on MemoryAgentBench (1.20x LoCoMo, 1.10x on average), general "
                "skills kept, 0.12% of the parameters trained"
            ),
            measured=(
                f"TSW closes {closed['tsw']:.0%} of the backbone -> oracle gap beyond the window "
                f"(exact match {backbone['beyond']:.3f} -> {tsw['beyond']:.3f}, oracle {oracle['beyond']:.3f}; "
                f"{ratio:.2f}x the backbone) training {share:.2%} of the parameters; in-window recall "
                f"{harm['in-window']:+.1%} and bits/byte {harm['text']:+.1%} relative change"
            ),
            criterion=(
                f"four parts: TSW closes >= {GAP_SHARE:.0%} of the backbone -> oracle gap with {setting.facts} facts; "
                f"in-window recall and bits/byte within {NO_HARM:.0%} (memlab's tolerance: the source says only "
                f"'kept'); the gain is the state's, not the adapters' (the zeroed-state ablation, LoRA alone closing "
                f"< {GAP_SHARE:.0%}); MSW above TSW at the largest fact counts"
            ),
            verdict=Result.verdict_of(parts),
            scale=study.scale,
            command="",
            table=_tables(table, rows),
            notes=_notes(setting, rows),
            details={
                "means": {m: {k: details_value(float(v)) for k, v in r.items()} for m, r in table.iterrows()},
                "runs": [{k: details_value(v) for k, v in r.items()} for r in rows.to_dict("records")],
            },
            parts=parts,
        )


def _parts(study: Study, setting, rows: pd.DataFrame, means: pd.DataFrame, closed: pd.Series) -> list[Part]:
    n = setting.eval_examples
    chance = 1.0 / int(run_config(rows.loc[rows["model"] == "backbone", "run_dir"].iloc[0]).data.num_values)

    def seeds(model: str, column: str = "beyond") -> np.ndarray:
        return rows.loc[rows["model"] == model, column].to_numpy(float)

    backbone, oracle = float(means.loc["backbone", "beyond"]), float(means.loc["oracle", "beyond"])
    gap_threshold = checks.Threshold.relative(GAP_SHARE, ("backbone", backbone), ("oracle", oracle))
    tsw_dirs = rows.loc[rows["model"] == "tsw", "run_dir"].tolist()
    config = run_config(tsw_dirs[0])
    sizes = estimate(config)
    configured = sizes["params_trainable"] / sizes["params"]
    share = float(means.loc["tsw", "params_trainable"] / means.loc["tsw", "params"])
    curve = load_curves(Path(tsw_dirs[0]))
    learning = checks.converged(
        "tsw eval exact match", curve["eval/exact_match"].dropna().tolist(), higher_is_better=True
    )
    common = (no_ladder(SCALE_AXIS),)
    gap = Part(
        name="TSW closes the gap",
        criterion=f"TSW's beyond-window exact match >= {GAP_SHARE:.0%} of the way from the backbone to the oracle; "
        f"<= {MAX_TRAINABLE:.0%} of the parameters trained",
        source_number=f"{PAPER_RATIO}x the frozen backbone, 0.12% of the parameters trained",
        measured=f"closes {closed['tsw']:.0%} of the gap, trains {share:.2%}",
        conditions=(
            checks.measured(
                f"closes >= {GAP_SHARE:.0%}",
                means.loc["tsw", "beyond"] >= gap_threshold.value,
                f"TSW {means.loc['tsw', 'beyond']:.3f} against {gap_threshold.value:.3f}",
            ),  # fmt: skip
            checks.by_configuration(
                f"trains <= {MAX_TRAINABLE:.0%}",
                share <= MAX_TRAINABLE,
                share,
                configured,
                "trainable share of the parameters",
            ),  # fmt: skip
        ),
        checks=(
            gap_threshold.check("gap"),
            checks.real_difference("TSW - backbone", difference(seeds("tsw"), seeds("backbone"), n, n)),
            checks.above_chance("oracle, the positive control", rate(seeds("oracle"), n), chance),
            learning,
            *checks.interiors(study, "lr", "tsw"),
            *common,
        ),
    )
    harm_checks, harm_conditions = [], []
    for column, what in (("in-window", "in-window recall"), ("text", "bits/byte")):
        change = means.loc["tsw", column] / means.loc["backbone", column] - 1
        harm_conditions.append(
            checks.measured(f"{what} within {NO_HARM:.0%}", abs(change) <= NO_HARM, f"{change:+.2%}")
        )
        harm_checks.append(checks.Threshold.absolute(NO_HARM, "memlab's tolerance; the source says skills are kept")
                           .check(what))  # fmt: skip
    harm = Part(
        name="general skills kept",
        criterion=f"TSW's in-window recall and bits/byte within {NO_HARM:.0%} of the backbone's",
        source_number="general skills kept",
        measured=", ".join(c.detail for c in harm_conditions),
        conditions=tuple(harm_conditions),
        checks=(*harm_checks, *checks.interiors(study, "lr", "tsw"), *common),
    )
    scores = [c for c in rows.columns if c.startswith(("beyond", "distance=", "facts=", "in-window", "text"))]
    zeroed = rows.loc[rows["model"] == "tsw zeroed", scores].to_numpy(float)
    reference = np.repeat(rows.loc[rows["model"] == "backbone", scores].to_numpy(float), len(zeroed), axis=0)
    not_above = difference(seeds("tsw zeroed"), seeds("backbone"), n, n).lo <= 0
    conditions = [
        checks.control(
            "zeroed state reads as the backbone",
            not_above,
            zeroed,
            reference,
            "TSW with its state zeroed at read, scored on every condition, against the backbone",
        ),  # fmt: skip
    ]
    lora = float(means.loc["lora", "beyond"])
    conditions.append(
        checks.measured(
            f"LoRA alone closes < {GAP_SHARE:.0%}",
            lora < gap_threshold.value,
            f"LoRA {lora:.3f} against {gap_threshold.value:.3f}",
        )  # fmt: skip
    )
    state = Part(
        name="the state, not the adapters",
        criterion=f"LoRA of the same rank alone closes < {GAP_SHARE:.0%} of the gap; TSW above LoRA",
        source_number="the gain comes from the δ-mem state",
        measured=f"LoRA closes {closed['lora']:.0%}, TSW {closed['tsw']:.0%}",
        conditions=tuple(conditions),
        checks=(
            gap_threshold.check("gap"),
            checks.real_difference("TSW - LoRA", difference(seeds("tsw"), seeds("lora"), n, n)),
            *checks.interiors(study, "lr", "tsw", "lora"),
            *common,
        ),
    )
    many = [c for c in (f"facts={k}" for k in (8, 16)) if c in means.columns]
    msw = Part(
        name="MSW above TSW at many facts",
        criterion=f"MSW's exact match above TSW's at {', '.join(many)}",
        source_number="more state heads hold more facts",
        measured=", ".join(f"{c}: MSW {means.loc['msw', c]:.3f} vs TSW {means.loc['tsw', c]:.3f}" for c in many),
        conditions=tuple(
            checks.measured(f"MSW > TSW at {c}", means.loc["msw", c] > means.loc["tsw", c], c) for c in many
        ),
        checks=(
            *(
                checks.real_difference(f"MSW - TSW at {c}", difference(seeds("msw", c), seeds("tsw", c), n, n))
                for c in many
            ),
            *(checks.above_chance(f"{m} at {c}", rate(seeds(m, c), n), chance) for m in ("msw", "tsw") for c in many),
            *checks.interiors(study, "lr", "tsw", "msw"),
            *common,
        ),
    )
    return [gap, harm, state, msw]


def _tables(table: pd.DataFrame, rows: pd.DataFrame) -> str:
    conditions = [c for c in table.columns if c.startswith(("beyond", "distance=", "facts=", "in-window"))]
    main = table[["beyond", "gap_closed", "ratio_to_backbone", "in-window", "text"]].rename(
        columns={"beyond": "beyond-window EM", "in-window": "in-window EM", "text": "stdlib bits/byte"}
    )
    cost = table[["params_trainable", "state_per_layer", "forward_flops_per_token"]]
    seeds = rows.groupby("model", sort=False)["seed"].nunique()
    return "\n\n".join(
        [
            "### Exact match of single-token answers (mean over seeds)\n\n"
            + frame_markdown(main.assign(seeds=seeds).reset_index(), 3),
            "### Exact match by condition\n\n" + frame_markdown(table[conditions].reset_index(), 3),
            "### Cost\n\n" + frame_markdown(cost.reset_index(), 3),
        ]
    )


def _notes(setting, rows: pd.DataFrame) -> str:
    return (
        f"Episodes of {setting.windows} windows of {setting.window} tokens over stdlib text; the backbone "
        f"(d_model {setting.d_model}, {setting.layers} layers) attends within block windows and trained on text "
        "mixed with in-window recall; adapters trained on beyond-window episodes only. `beyond` puts each fact in "
        "a random earlier window; `distance=d` exactly d windows back; `facts=n` varies the facts. Retrieval is the "
        "backbone reading the earlier window that holds the queried key, prepended inside its window. The zeroed "
        "rows read a zero state from the trained δ-mem adapters (the gain must be the state's). A CPU-scale "
        "analogue of the paper's setting, not its benchmarks; every run is listed in the JSON."
    )
