"""`memlab reproduce`: registered claims of the sources memlab implements, each checked by its own runs.

A claim (memlab/reproduce/claims/, one module each) names the sweeps it needs and turns their run directories into
a `Result` with the source's number, memlab's, the criterion and a verdict; `reproduce` launches the sweeps
through the ordinary launchers (finished runs skipped) and writes results/<claim>.md and .json.
"""

from memlab.reproduce.claim import SCALES, VERDICTS, Claim, Result

__all__ = ["SCALES", "VERDICTS", "Claim", "Result"]
