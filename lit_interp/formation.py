"""When a circuit formed: one table of score thresholds and one rule, read by both reports and the sweep objective."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Threshold:
    """A head "has" `finding` once its score reaches `value`."""

    value: float
    finding: str


THRESHOLDS: dict[str, Threshold] = {
    "prev_token_score": Threshold(0.5, "a previous-token head"),
    "bos_score": Threshold(0.5, "a BOS head"),
    "duplicate_score": Threshold(0.5, "a duplicate-token head"),
    "induction_score": Threshold(0.5, "an induction head"),
    "prefix_matching_score": Threshold(0.5, "an induction head (prefix matching on the probe sequences)"),
    "ov_copying_score": Threshold(0.9, "a copying OV circuit"),
    "ov_eigen_score": Threshold(0.5, "a copying OV circuit (eigenvalues)"),
    "qk_eigen_score": Threshold(0.5, "a QK circuit attending to similar inputs"),
    "patching_score": Threshold(0.5, "a head the last answer depends on"),
}


def threshold_values(overrides: dict[str, float] | None = None) -> dict[str, float]:
    """score -> threshold: the table's, with `overrides` replacing or adding to them."""
    return {score: threshold.value for score, threshold in THRESHOLDS.items()} | dict(overrides or {})


def finding(score: str, threshold: float) -> str:
    known = THRESHOLDS.get(score)
    return f"{known.finding if known else score} ({score} >= {threshold:g})"


@dataclass(frozen=True)
class Formation:
    """The first snapshot step at which a score is at or above its threshold.

    `at_first_snapshot`: the score was already there at the run's first snapshot, so the head
    formed at or before `step` (the snapshots cannot say when).
    """

    step: int
    at_first_snapshot: bool

    def __str__(self) -> str:
        return f"<= {self.step}" if self.at_first_snapshot else str(self.step)


def formation(steps: Sequence[int], values: Sequence[float | None], threshold: float) -> Formation | None:
    """When a series of snapshot values first reaches `threshold`, or None if it never does (None and NaN never do)."""
    for index, (step, value) in enumerate(zip(steps, values)):
        if value is not None and not math.isnan(value) and value >= threshold:
            return Formation(int(step), at_first_snapshot=index == 0)
    return None
