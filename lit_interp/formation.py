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


@dataclass(frozen=True)
class Phase:
    """A run has reached `name` once the summary value at `key` (`section.entry`) reaches `value`."""

    key: str
    value: float
    name: str


# Run-level phases of training (Nanda et al. 2023's grokking): memorising the training split, then generalising.
PHASES: dict[str, Phase] = {
    "memorised": Phase("progress_measures.train_acc", 1.0, "train accuracy reaches 1.0"),
    "generalised": Phase("progress_measures.test_acc", 0.99, "test accuracy reaches 0.99"),
}


def summary_value(summary: dict, key: str) -> float | None:
    """The number at `section.entry` of a snapshot summary, None where the summary lacks it or holds no number."""
    section, entry = key.split(".", 1)
    value = summary.get(section, {}).get(entry) if isinstance(summary.get(section), dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def phase_steps(steps: Sequence[int], summaries: Sequence[dict]) -> dict[str, Formation | None]:
    """Each phase whose measurement any snapshot holds -> when the run first reached it (None: not within the run)."""
    reached = {}
    for phase_name, phase in PHASES.items():
        values = [summary_value(summary, phase.key) for summary in summaries]
        if any(value is not None for value in values):
            reached[phase_name] = formation(steps, values, phase.value)
    return reached


def describe_phase(reached: Formation | None, last_step: int) -> str:
    """A table cell: the step, '<= s' when already there at the first snapshot, or that the run never got there."""
    return f"not by step {last_step}" if reached is None else str(reached)


@dataclass(frozen=True)
class PhaseChange:
    """A run's phase change: where the summary series at `key` falls from its first value to its lowest, when it
    falls by at least `min_fall` (`lit_interp.analysis.phase_change.phase_change` finds the step)."""

    key: str
    min_fall: float
    name: str


# Olsson et al. 2022: induction heads form where the in-context loss (repeated half minus first) drops abruptly.
PHASE_CHANGES: dict[str, PhaseChange] = {
    "in_context_phase_change": PhaseChange(
        "in_context.in_context_loss", 1.0, "halfway down the in-context loss's fall (of at least 1 nat)"
    ),
}
