"""A claim of a source (a seed paper, a blog post, Epoch AI) and what memlab measured of it.

A `Claim` names the runs it needs (`sweeps`) and turns their run directories into a `Result`: the source's
number beside memlab's, the rule that compares them and the verdict. The rule is written down with every result
so that a reader can disagree with it, not only with the numbers.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memlab.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from memlab.sweep import Sweep

VERDICTS = ("reproduced", "partly", "not reproduced")
SCALES = ("cpu", "paper")


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

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ConfigError(f"claim {self.claim!r}: verdict {self.verdict!r} is not one of {', '.join(VERDICTS)}")
        if self.scale not in SCALES:
            raise ConfigError(f"claim {self.claim!r}: scale {self.scale!r} is not one of {', '.join(SCALES)}")
        json.dumps(self.details)  # fail here, not halfway through writing the results

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Result:
        return cls(**data)

    def verdict_line(self) -> str:
        return f"{self.claim}: {self.verdict} (source: {self.source_number}; memlab: {self.measured})"

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
        if self.table:
            lines += [self.table.strip(), ""]
        lines += [f"![{name}]({name})\n" for name in self.figures]
        if self.notes:
            lines += ["## Notes", "", self.notes.strip(), ""]
        return "\n".join(lines)


class Claim:
    """One registered claim (see memlab.registry.CLAIMS). Subclasses set the three class attributes and
    implement `evaluate`; those that need training runs also return their sweeps."""

    name: str = ""
    title: str = ""
    source: str = ""

    def sweeps(self, scale: str, runs: Path) -> Iterable[Sweep]:
        """The sweeps whose runs `evaluate` reads, in order; none for claims that need no training. Consumed
        lazily: each sweep finishes before the next is asked for, so a later stage can read an earlier one's runs
        (under runs/<sweep.name>/), as a learning-rate sweep that picks the rate of the seeds after it."""
        return []

    def evaluate(self, runs: Path, scale: str, out: Path) -> Result:
        """Read the runs (each sweep's under runs/<sweep.name>/), write any figures into `out`, return the result."""
        raise NotImplementedError

    def command(self, scale: str) -> str:
        return f"memlab reproduce {self.name} --scale {scale}"


def verdict_of(parts: list[bool]) -> str:
    """A claim made of several parts: reproduced when all hold, partly when some do, else not reproduced."""
    return VERDICTS[0] if all(parts) else VERDICTS[1] if any(parts) else VERDICTS[2]


def load_result(path: Path) -> Result:
    return Result.from_json(json.loads(Path(path).read_text()))


def details_value(value: Any) -> Any:
    """A float for JSON: inf and nan (utilisation past or below the measured range) become strings."""
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return value
