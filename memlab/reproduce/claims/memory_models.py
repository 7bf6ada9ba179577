"""Memory models (Badger, arXiv 2602.13466): causal-LM embeddings hold little of their input whatever the scale,
autoencoder embeddings nearly all of it; a memory model trained only on next tokens forms information-poor
memories, one trained with next-token + retention (copy) objectives information-rich ones it decodes; a frozen
high-fidelity encoder with a copy-first curriculum streamlines training.

Three tables (memlab/studies/memory_models/): information by encoder kind (probe CE, I_e, calibrated I_e',
Hamming); clm-only vs combined memory models with the no-memory decoder as the floor; FLOPs to copy Hamming 0.9,
curriculum vs from scratch. The verdict reads the research notes' thresholds (A.3), written in the criterion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from memlab.analysis.tables import frame_markdown
from memlab.registry import CLAIMS
from memlab.reproduce import checks
from memlab.reproduce.claim import Claim, Result, details_value
from memlab.reproduce.intervals import Interval, difference
from memlab.reproduce.ladder import no_ladder
from memlab.reproduce.parts import Part
from memlab.studies.memory_models.protocol import SCALES, autoencoder_dir, memory_runs, stages
from memlab.studies.memory_models.report import (
    TARGET,
    curriculum_table,
    draw_copy_curves,
    information,
    memory_table,
)
from memlab.sweep.stages import Study
from memlab.train.run_dir import read_json

AE_INFO = checks.Threshold.from_source(0.97, "Badger: autoencoder embeddings hold I_e ~0.97 of a 512-token window")
SHARE = 0.5  # relative thresholds: half the way between the two measured controls (memlab's share)
FIGURE = "memory-models-copy.png"
SCALE_AXIS = "chunk length L"


@CLAIMS.register("memory-models")
class MemoryModels(Claim):
    name = "memory-models"
    title = "Memory models: what embeddings hold, what retention objectives add, what a frozen encoder saves"
    source = "Badger, arXiv 2602.13466 (blbadger/memorymodels)"
    evaluation_work = "a memory probe (a fresh decoder trained on frozen embeddings) per encoder and seed"

    def stages(self, scale: str) -> list:
        return stages(SCALES[scale])

    def evaluate(self, study: Study, out: Path) -> Result:
        setting = SCALES[study.scale]
        runs = study.runs
        memory = memory_runs(study)
        info = information(runs, setting, memory)
        table = memory_table(memory, setting)
        ae_flops = float(read_json(autoencoder_dir(runs) / "summary.json")["flops"])
        curriculum = curriculum_table(memory, ae_flops)
        draw_copy_curves(out / FIGURE, memory)

        by_kind = info.groupby("encoder", sort=False).mean(numeric_only=True)
        by_condition = table.groupby("condition", sort=False).mean(numeric_only=True)
        probe_of = {c: by_kind.loc[f"memory model, {c}", "I_e_calibrated"] for c in ("clm", "combined")}
        ae, lm, untrained = (by_kind.loc[k] for k in ("autoencoder", "causal LM", "untrained"))
        clm, combined, none = (by_condition.loc[c] for c in ("clm", "combined", "none"))
        to_target = curriculum.groupby("condition")["flops_to_target"].mean()  # NaN if a seed never got there
        parts = _parts(study, setting, info, table, curriculum, memory)
        return Result(
            claim=self.name,
            title=self.title,
            source=self.source,
            source_number=(
                "autoencoder embeddings nearly lossless (I_e ~0.97 on 512 tokens), causal-LM embeddings poor at any "
                "scale; combined causal + copy objectives give information-rich memories (copy eval ~94.7, "
                "unverified extraction) that clm-only training does not; the frozen-encoder curriculum streamlines "
                "training"
            ),
            measured=_measured(ae, lm, untrained, probe_of, clm, combined, none, to_target),
            criterion=(
                f"three parts: (1) the autoencoder's I_e >= the source's 0.97 and the causal LM's I_e' below "
                f"{SHARE:.0%} of the way from an untrained encoder to the autoencoder; (2) combined memories' I_e' and "
                f"copy Hamming past {SHARE:.0%} of the way from clm-only to the autoencoder, their loss on later "
                f"chunks no more than {SHARE:.0%} of the way from clm-only's to the no-memory decoder's; (3) the "
                f"curriculum reaches copy Hamming {TARGET} in fewer training FLOPs than the combined model from scratch"
            ),
            verdict=Result.verdict_of(parts),
            scale=study.scale,
            command="",
            table=_tables(info, table, curriculum),
            notes=_notes(setting),
            details={
                "information": _records(info),
                "memory": _records(table.drop(columns=["run_dir"])),
                "curriculum": _records(curriculum),
                "autoencoder_flops": ae_flops,
                "runs": list(table["run_dir"]),
            },
            figures=[FIGURE],
            parts=parts,
        )


def _parts(study: Study, setting, info, table: pd.DataFrame, curriculum: pd.DataFrame, memory) -> list[Part]:
    n = setting.eval_examples

    def probe(kind: str, column: str = "I_e_calibrated") -> np.ndarray:
        return info.loc[info["encoder"] == kind, column].to_numpy(float)

    def run(condition: str, column: str) -> np.ndarray:
        return table.loc[table["condition"] == condition, column].to_numpy(float)

    ae, lm, untrained = (float(probe(k).mean()) for k in ("autoencoder", "causal LM", "untrained"))
    lm_poor = checks.Threshold.relative(SHARE, ("untrained encoder", untrained), ("autoencoder", ae))
    hamming = {k: probe(k, "hamming") for k in ("autoencoder", "causal LM")}
    common = (no_ladder(SCALE_AXIS),)
    encoders = Part(
        name="autoencoder rich, causal LM poor",
        criterion=f"autoencoder I_e >= {AE_INFO.value:g}; causal LM I_e' < {lm_poor.cite}",
        source_number="autoencoder I_e ~0.97; causal-LM embeddings poor at any scale",
        measured=f"autoencoder I_e {probe('autoencoder', 'I_e').mean():.3f}, causal LM I_e' {lm:.3f} "
        f"(untrained {untrained:.3f})",
        conditions=(
            checks.measured(
                "autoencoder nearly lossless",
                probe("autoencoder", "I_e").mean() >= AE_INFO.value,
                f"I_e {probe('autoencoder', 'I_e').mean():.3f}",
            ),  # fmt: skip
            checks.measured("causal LM poor", lm < lm_poor.value, f"I_e' {lm:.3f} against {lm_poor.value:.3f}"),
        ),
        checks=(
            AE_INFO.check("autoencoder"),
            lm_poor.check("causal LM"),
            checks.real_difference(
                "autoencoder - causal LM probe Hamming", difference(hamming["autoencoder"], hamming["causal LM"], n, n)
            ),  # fmt: skip
            *common,
        ),
    )
    clm_info, comb_info = float(probe("memory model, clm").mean()), float(probe("memory model, combined").mean())
    clm_copy, comb_copy = run("clm", "copy_hamming"), run("combined", "copy_hamming")
    clm_loss, comb_loss, none_loss = (run(c, "later_chunks_loss") for c in ("clm", "combined", "none"))
    rich_info = checks.Threshold.relative(SHARE, ("clm-only memories", clm_info), ("autoencoder", ae))
    rich_copy = checks.Threshold.relative(SHARE, ("clm-only", float(clm_copy.mean())),
                                          ("autoencoder probe", float(hamming["autoencoder"].mean())))  # fmt: skip
    loss_cap = checks.Threshold.relative(
        SHARE, ("clm-only", float(clm_loss.mean())), ("no memory", float(none_loss.mean()))
    )
    retention = Part(
        name="combined memories rich",
        criterion=f"combined memories' I_e' >= {rich_info.cite}; copy Hamming >= {rich_copy.cite}; loss on later "
        f"chunks <= {loss_cap.cite}",
        source_number="combined objectives give information-rich memories that clm-only training does not",
        measured=f"I_e' {clm_info:.3f} -> {comb_info:.3f}, copy Hamming {clm_copy.mean():.3f} -> "
        f"{comb_copy.mean():.3f}, later-chunk loss {clm_loss.mean():.3f} -> {comb_loss.mean():.3f} "
        f"(no memory {none_loss.mean():.3f})",
        conditions=(
            checks.measured("memories hold information", comb_info >= rich_info.value, f"I_e' {comb_info:.3f}"),
            checks.measured(
                "memories decoded", comb_copy.mean() >= rich_copy.value, f"copy Hamming {comb_copy.mean():.3f}"
            ),
            checks.measured("next-token loss kept", comb_loss.mean() <= loss_cap.value, f"{comb_loss.mean():.3f} nats"),
        ),
        checks=(
            rich_info.check("I_e'"),
            rich_copy.check("copy Hamming"),
            loss_cap.check("loss"),
            checks.real_difference("combined - clm-only copy Hamming", difference(comb_copy, clm_copy, n, n)),
            checks.real_difference("no memory - combined later-chunk loss", difference(none_loss, comb_loss)),
            *checks.interiors(study, "lr", "clm", "combined", "none"),
            *(
                checks.converged(
                    f"{c} later-chunk loss", _curve(memory, c, "eval/later_chunks_loss"), higher_is_better=False
                )
                for c in ("clm", "combined")
            ),  # fmt: skip
            *common,
        ),
    )
    means = curriculum.groupby("condition")[["flops_to_target", "bracket_low", "bracket_high"]].mean()
    reached = all(c in means.index and np.isfinite(means.loc[c, "flops_to_target"]) for c in ("curriculum", "combined"))
    if reached:
        cur, comb = means.loc["curriculum"], means.loc["combined"]
        saving = Interval(
            float(comb["flops_to_target"] - cur["flops_to_target"]),
            float(comb["bracket_low"] - cur["bracket_high"]),
            float(comb["bracket_high"] - cur["bracket_low"]),
            "the evaluations around each crossing",
        )
    else:
        saving = Interval(float("nan"), -np.inf, np.inf, "a condition never reached the target")
    saves = Part(
        name="curriculum saves compute",
        criterion=f"the curriculum reaches copy Hamming {TARGET} in fewer training FLOPs than the combined model",
        source_number="the frozen-encoder curriculum streamlines training",
        measured=f"FLOPs to target: curriculum {means['flops_to_target'].get('curriculum', float('nan')):.3g}, "
        f"from scratch {means['flops_to_target'].get('combined', float('nan')):.3g}",
        conditions=(checks.measured("curriculum cheaper", reached and saving.value > 0, f"saving {saving.text()}"),),
        checks=(
            checks.real_difference("combined - curriculum FLOPs to target", saving),
            checks.fixed_budget("FLOPs to target", "reads compute to a target on each curve"),
            *checks.interiors(study, "lr", "curriculum", "combined"),
            *common,
        ),
    )
    return [encoders, retention, saves]


def _curve(memory: pd.DataFrame, condition: str, metric: str) -> list[float]:
    """The metric's evaluations of the condition's first run at its chosen rate."""
    row = memory[memory["condition"] == condition].iloc[0]
    return row["curve"][metric].dropna().tolist()


def _measured(ae, lm, untrained, probe_of, clm, combined, none, to_target) -> str:
    return (
        f"probe I_e' (Hamming): autoencoder {ae['I_e_calibrated']:.2f} ({ae['hamming']:.2f}), causal LM "
        f"{lm['I_e_calibrated']:.2f} ({lm['hamming']:.2f}), untrained {untrained['I_e_calibrated']:.2f}; memories "
        f"I_e' clm-only {probe_of['clm']:.2f} vs combined {probe_of['combined']:.2f}, copy Hamming "
        f"{clm['copy_hamming']:.2f} vs {combined['copy_hamming']:.2f}, loss on later chunks "
        f"{clm['later_chunks_loss']:.3f} vs {combined['later_chunks_loss']:.3f} nats (no memory "
        f"{none['later_chunks_loss']:.3f}); FLOPs to copy Hamming {TARGET}: curriculum "
        f"{to_target.get('curriculum', float('nan')):.3g}, from scratch {to_target.get('combined', float('nan')):.3g}"
    )


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: details_value(v) for k, v in r.items()} for r in frame.to_dict("records")]


def _tables(info: pd.DataFrame, table: pd.DataFrame, curriculum: pd.DataFrame) -> str:
    kinds = info.groupby("encoder", sort=False).agg(
        seeds=("seed", "nunique"),
        ce=("ce", "mean"),
        I_e=("I_e", "mean"),
        I_e_calibrated=("I_e_calibrated", "mean"),
        hamming=("hamming", "mean"),
    )
    conditions = table.groupby("condition", sort=False).agg(
        seeds=("seed", "nunique"),
        lr=("lr", "first"),
        later_chunks_loss=("later_chunks_loss", "mean"),
        copy_hamming=("copy_hamming", "mean"),
        flops=("flops", "mean"),
    )
    return "\n\n".join(
        [
            "### Information by encoder kind (memory probe, mean over seeds)\n\n"
            + frame_markdown(kinds.reset_index(), 3),
            "### Memory models (mean over seeds; each condition at its own learning rate)\n\n"
            + frame_markdown(conditions.reset_index(), 3),
            f"### Training FLOPs to copy Hamming {TARGET}, per run\n\n" + frame_markdown(curriculum, 3),
            "### Every run\n\n" + frame_markdown(table.drop(columns=["run_dir"]), 3),
        ]
    )


def _notes(setting) -> str:
    return (
        f"Stdlib bytes in {setting.num_chunks} chunks of {setting.chunk_len}; d_model {setting.d_model}, "
        f"{setting.encoder_layers} encoder + {setting.decoder_layers} decoder attention layers; each memory model "
        f"trains {setting.memory_steps} steps (the curriculum: {setting.curriculum_steps} of blank copy, then "
        f"combined), the autoencoder {setting.autoencoder_steps}, the causal LM {setting.lm_steps} on windows of "
        f"{setting.num_chunks * setting.chunk_len} bytes. Probes: a fresh 2-layer unrolled decoder, "
        f"{setting.probe_steps} steps, regenerating {setting.chunk_len}-byte windows from the frozen embedding "
        "(the LM's at its penultimate position); I_e = 1 - CE/ln V (V = 257 byte ids), I_e' = 1 - CE/CE_null with "
        "CE_null from a constant embedding. Copy Hamming is the argmax regeneration of the blanked second half of an "
        "example from the first half's memories (no teacher forcing: the decoder sees blanks). The curriculum's "
        "encoder is the autoencoder's, frozen; its FLOPs count its own run (frozen encoder forward only), the "
        "autoencoder's are listed beside. A CPU-scale analogue of the paper's setting (BPE 8k, 512-token windows, "
        "16-layer decoders), not its numbers. A decoder not trained on the copy view (clm-only, no memory) has never "
        "read BLANK inputs, so its copy Hamming, scored after training, can fall below the token-statistics floor "
        "(the constant probe's Hamming): for its memories read the probe's I_e'. The curriculum's loss on later "
        f"chunks comes after {setting.memory_steps - setting.curriculum_steps} steps of the combined objective, the "
        f"others' after {setting.memory_steps}."
    )
