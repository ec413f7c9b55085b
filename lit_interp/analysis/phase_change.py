"""A phase change read from a series of snapshots: where a falling series falls, how abruptly, and the bump before it.

Plain functions over (steps, values) series, such as the in-context loss of every snapshot of a
run. A step is interpolated linearly between the two snapshots around it, so it need not be a
snapshot's own step; its precision is the spacing of the snapshots there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# The transition is where the series covers the middle of its fall: from 20% to 80% of the way down.
LOW_FRACTION, HIGH_FRACTION = 0.2, 0.8


@dataclass(frozen=True)
class Fall:
    """Where a series falls: `step` halfway down, `start` and `end` at LOW_FRACTION and HIGH_FRACTION of the fall.

    `depth` is the first value minus the lowest one; `relative_width` = (end - start) / step, small for
    a phase change (a logistic step in a series that is flat elsewhere) and above 1 for a steady drift
    (1.2 for a straight line from step 0, 2.0 for an exponential decay). NaN fields come with a `reason`.
    """

    step: float
    start: float
    end: float
    depth: float
    relative_width: float
    reason: str = ""


def _finite_series(steps: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The points of the series whose value is a finite number, in step order."""
    steps, values = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    if steps.shape != values.shape or steps.ndim != 1:
        raise ValueError(f"steps {steps.shape} and values {values.shape} must be two sequences of the same length")
    keep = np.isfinite(values) & np.isfinite(steps)
    order = np.argsort(steps[keep], kind="stable")
    return steps[keep][order], values[keep][order]


def first_reaching(steps: Sequence[float], values: Sequence[float], level: float, rising: bool = False) -> float:
    """The first step at which the series reaches `level` (from above, or from below if `rising`), NaN if never.

    Linear between the last snapshot short of the level and the first one at or past it; the first
    snapshot's step when the series starts there.
    """
    steps, values = _finite_series(steps, values)
    sign = -1.0 if rising else 1.0
    reached = np.flatnonzero(sign * values <= sign * level)
    if len(reached) == 0:
        return math.nan
    i = reached[0]
    if i == 0:
        return float(steps[0])
    before, after = values[i - 1], values[i]
    fraction = (before - level) / (before - after)
    return float(steps[i - 1] + fraction * (steps[i] - steps[i - 1]))


def phase_change(steps: Sequence[float], values: Sequence[float], min_fall: float) -> Fall:
    """Where the series falls from its first value to its lowest, if it falls by at least `min_fall`.

    The step is where the series first gets halfway down; the fall is measured from the first snapshot,
    so a series that starts on its plateau (as a run's first snapshots do) gives the plateau's level.
    """
    steps, values = _finite_series(steps, values)
    if len(values) < 3:
        return _undefined(f"{len(values)} finite snapshots; a fall needs at least 3")
    depth = float(values[0] - values.min())
    if not depth >= min_fall:
        return _undefined(f"the series falls by {depth:.3g}, less than min_fall={min_fall:.3g}")

    def at(fraction: float) -> float:
        return first_reaching(steps, values, values[0] - fraction * depth)

    step, start, end = at(0.5), at(LOW_FRACTION), at(HIGH_FRACTION)
    return Fall(step, start, end, depth, (end - start) / step if step > 0 else math.nan)


def _undefined(reason: str) -> Fall:
    return Fall(math.nan, math.nan, math.nan, math.nan, math.nan, reason)


def loss_bump(steps: Sequence[float], losses: Sequence[float], until_step: float) -> tuple[float, float]:
    """The largest rise of a loss above its running minimum at the snapshots up to `until_step`, and the step
    of its peak: (0, first step) for a loss that never rises; NaN when no snapshot precedes `until_step`.

    With `until_step` the phase change's step, this is the bump Olsson et al. see in the loss just
    before induction heads form.
    """
    steps, losses = _finite_series(steps, losses)
    before = steps <= until_step
    if not before.any():
        return math.nan, math.nan
    steps, losses = steps[before], losses[before]
    rise = losses - np.minimum.accumulate(losses)
    peak = int(rise.argmax())
    return float(rise[peak]), float(steps[peak])
