"""A claim's parts and the verdicts that follow from them.

A part is one thing the source says (with its number), memlab's measurement, the criterion that compares them as
clauses (`Condition`s: only those decided by measurement count), and the evidence checks. A part whose evidence
checks fail is inconclusive whatever its numbers say; a claim is reproduced when every decided part is, not
reproduced when none is, partly when they differ, inconclusive when no part is decided.
"""

from __future__ import annotations

import dataclasses

from memlab.reproduce.checks import Check, Condition

PART_VERDICTS = ("reproduced", "not reproduced", "inconclusive")
VERDICTS = ("reproduced", "partly", "not reproduced", "inconclusive")


@dataclasses.dataclass(frozen=True)
class Part:
    name: str
    criterion: str
    source_number: str
    measured: str
    conditions: tuple[Condition, ...]
    checks: tuple[Check, ...] = ()

    @property
    def evidence(self) -> list[Condition]:
        return [c for c in self.conditions if c.decided_by == "measurement"]

    @property
    def all_checks(self) -> list[Check]:
        """The part's checks, then one sanity check per clause the setup (not training) decides."""
        return [*self.checks, *(c.sanity() for c in self.conditions if c.decided_by != "measurement")]

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.kind == "evidence" and not c.passed]

    @property
    def verdict(self) -> str:
        if self.failed or not self.evidence:
            return "inconclusive"
        return "reproduced" if all(c.holds for c in self.evidence) else "not reproduced"

    def why(self) -> str:
        """One line: what decided the verdict."""
        if self.failed:
            return "inconclusive: " + "; ".join(f"{c.name}: {c.detail}" for c in self.failed)
        if not self.evidence:
            return "inconclusive: no clause of the criterion is decided by measurement"
        failing = [c.name for c in self.evidence if not c.holds]
        return self.verdict + (f" ({', '.join(failing)} fails)" if failing else "")

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "criterion": self.criterion,
            "source_number": self.source_number,
            "measured": self.measured,
            "verdict": self.verdict,
            "conditions": [dataclasses.asdict(c) for c in self.conditions],
            "checks": [c.to_json() for c in self.all_checks],
        }


def claim_verdict(verdicts: list[str]) -> str:
    """The claim's verdict from its parts' verdicts."""
    decided = [v for v in verdicts if v != "inconclusive"]
    if not decided:
        return "inconclusive"
    if all(v == "reproduced" for v in decided):
        return "reproduced"
    if all(v == "not reproduced" for v in decided):
        return "not reproduced"
    return "partly"
