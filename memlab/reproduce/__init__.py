"""`memlab reproduce`: registered claims of the sources memlab implements, each checked by its own runs.

A claim (memlab/reproduce/claims/, one module each) declares its stages (memlab.sweep.stages) and turns their runs
into a `Result` of parts: the source's number, memlab's, the criterion, the evidence checks (checks.py) and a
verdict per part (parts.py), the claim's verdict from its parts. The engine (run.py) validates the whole plan
(plan.py) before its first step, runs the stages through the ordinary launchers (finished runs skipped), and
writes results/<claim>.md and .json; ladder.py fits an effect along a scale axis and forecasts it.
"""

from memlab.reproduce.claim import SCALES, Claim, Result
from memlab.reproduce.parts import VERDICTS, Part

__all__ = ["SCALES", "VERDICTS", "Claim", "Part", "Result"]
