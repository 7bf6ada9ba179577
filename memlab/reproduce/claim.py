"""A claim of a source (a seed paper, a blog post, Epoch AI) and what memlab measured of it.

A `Claim` declares its stages (memlab.sweep.stages) and turns their runs into a `Result`: parts, each with
the source's number beside memlab's, the criterion, its evidence checks and a verdict, and the claim's verdict
from its parts. The rule is written down with every result so that a reader can disagree with it, not only with
the numbers. Results written before the evidence checks existed carry `protocol: 1` and no parts.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memlab.errors import ConfigError
from memlab.reproduce.parts import VERDICTS, Part, claim_verdict

if TYPE_CHECKING:
    from memlab.sweep.stages import Study

SCALES = ("cpu", "paper")
PROTOCOL = 2  # results from the protocol engine with evidence checks; 1: written before them


@dataclasses.dataclass
class Result:
    """What one `memlab reproduce NAME` found; written as NAME.md (for people) and NAME.json (for tables)."""

    claim: str
    title: str
    source: str  # e.g. "seed 003", "Epoch AI 2024 (Besiroglu et al.)"
    source_number: str  # what the source says
    measured: str  # memlab's number, with its interval where there is one
    criterion: str  # the rule that decided the verdict
    verdict: str
    scale: str
    command: str  # the `memlab reproduce ...` command that produced it
    table: str = ""  # markdown
    notes: str = ""  # markdown: caveats (fewer seeds, fewer resamples, what the scale leaves out)
    details: dict = dataclasses.field(default_factory=dict)  # every figure, JSON-able
    figures: list[str] = dataclasses.field(default_factory=list)  # file names next to the .md
    parts: list = dataclasses.field(default_factory=list)  # Part (from a claim) or its JSON (read back)
    ladder: dict | None = None  # memlab.reproduce.ladder.Ladder.to_json()
    protocol: int = PROTOCOL

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ConfigError(f"claim {self.claim!r}: verdict {self.verdict!r} is not one of {', '.join(VERDICTS)}")
        if self.scale not in SCALES:
            raise ConfigError(f"claim {self.claim!r}: scale {self.scale!r} is not one of {', '.join(SCALES)}")
        if self.protocol >= PROTOCOL and self.parts and self.verdict != (v := self.verdict_of(self.parts)):
            raise ConfigError(f"claim {self.claim!r}: verdict {self.verdict!r}, but its parts give {v!r}")
        json.dumps(self.details)  # fail here, not halfway through writing the results

    @staticmethod
    def verdict_of(parts: list) -> str:
        return claim_verdict([p.verdict if isinstance(p, Part) else p["verdict"] for p in parts])

    def part_json(self) -> list[dict]:
        return [p.to_json() if isinstance(p, Part) else p for p in self.parts]

    def decided(self) -> tuple[int, int]:
        """(parts decided, parts)."""
        parts = self.part_json()
        return sum(p["verdict"] != "inconclusive" for p in parts), len(parts)

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "parts": self.part_json()}

    @classmethod
    def from_json(cls, data: dict) -> Result:
        return cls(**{"protocol": 1, **data})  # a file without the field predates the protocol engine

    def verdict_line(self) -> str:
        decided, total = self.decided()
        parts = f", {decided} of {total} parts decided" if total else ""
        return f"{self.claim}: {self.verdict}{parts} (source: {self.source_number}; memlab: {self.measured})"

    def to_markdown(self) -> str:
        lines = [
            f"# {self.title}",
            "",
            f"**Verdict: {self.verdict}** ({self.scale} scale)",
            "",
            f"- claim: `{self.claim}`",
            f"- source: {self.source}",
            f"- the source says: {self.source_number}",
            f"- memlab measured: {self.measured}",
            f"- criterion: {self.criterion}",
            f"- command: `{self.command}`",
            "",
        ]
        if self.protocol < PROTOCOL:
            lines += ["This verdict predates the protocol engine's evidence checks (protocol 1).", ""]
        lines += _parts_markdown(self.part_json())
        if self.table:
            lines += [self.table.strip(), ""]
        if self.ladder:
            from memlab.reproduce.ladder import ladder_markdown

            lines += [ladder_markdown(self.ladder), ""]
        lines += [f"![{name}]({name})\n" for name in self.figures]
        if self.notes:
            lines += ["## Notes", "", self.notes.strip(), ""]
        return "\n".join(lines)


def _parts_markdown(parts: list[dict]) -> list[str]:
    if not parts:
        return []
    lines = ["## Parts", ""]
    for p in parts:
        lines += [
            f"### {p['name']}: **{p['verdict']}**",
            "",
            f"- the source says: {p['source_number']}",
            f"- memlab measured: {p['measured']}",
            f"- criterion: {p['criterion']}",
            "",
            "| check | kind | passed | detail |",
            "|---|---|---|---|",
            *(
                f"| {c['name']} | {c['kind']} | {'yes' if c['passed'] else '**no**'} | {c['detail']} |"
                for c in p["checks"]
            ),
            "",
        ]
    return lines


class Claim:
    """One registered claim (see memlab.registry.CLAIMS). Subclasses set the class attributes, declare their stages
    (none for claims that need no training) and implement `evaluate`."""

    name: str = ""
    title: str = ""
    source: str = ""
    evaluation_work: str = ""  # compute `evaluate` spends outside training runs, for the plan (not counted in it)

    def stages(self, scale: str) -> list:
        """The stages, in order (memlab.sweep.stages.Stage / Search)."""
        return []

    def evaluate(self, study: Study, out: Path) -> Result:
        """Read the study's runs, write any figures into `out`, return the result with its parts."""
        raise NotImplementedError

    def command(self, scale: str) -> str:
        return f"memlab reproduce {self.name} --scale {scale}"


def load_result(path: Path) -> Result:
    return Result.from_json(json.loads(Path(path).read_text()))


def details_value(value: Any) -> Any:
    """A float for JSON: inf and nan (utilisation past or below the measured range) become strings."""
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return value
