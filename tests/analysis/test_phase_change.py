"""Phase changes read from snapshot series: synthetic series whose step, width and bump are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lit_interp.analysis.phase_change import first_reaching, loss_bump, phase_change

STEPS = np.arange(0, 2001, 10)


def logistic_fall(steps, step, width, depth=4.0):
    """A plateau at 0 falling to -depth around `step`; 20% to 80% of the fall takes 2 ln 4 x width steps."""
    return -depth / (1 + np.exp(-(steps - step) / width))


def test_first_reaching_interpolates_between_snapshots():
    assert first_reaching([0, 10, 20], [1.0, 0.0, -1.0], 0.25) == pytest.approx(7.5)
    assert first_reaching([0, 10, 20], [0.0, 1.0, 2.0], 1.5, rising=True) == pytest.approx(15.0)
    assert first_reaching([0, 10], [0.0, 0.5], 0.0) == 0  # already there at the first snapshot
    assert math.isnan(first_reaching([0, 10], [1.0, 0.5], 0.0))


def test_a_logistic_fall_is_found_at_its_midpoint_with_its_width():
    fall = phase_change(STEPS, logistic_fall(STEPS, step=800, width=25), min_fall=1.0)
    assert fall.step == pytest.approx(800, abs=2)
    assert fall.end - fall.start == pytest.approx(2 * math.log(4) * 25, abs=3)
    assert fall.depth == pytest.approx(4.0, abs=1e-3)
    assert fall.relative_width == pytest.approx(2 * math.log(4) * 25 / 800, abs=0.01)
    assert fall.reason == ""


def test_a_steady_drift_reads_as_wide():
    line = phase_change(STEPS, -STEPS / 500, min_fall=1.0)
    assert line.step == pytest.approx(1000) and line.relative_width == pytest.approx(1.2)
    decay = phase_change(STEPS, 4 * np.exp(-STEPS / 200), min_fall=1.0)
    assert decay.step == pytest.approx(200 * math.log(2), abs=5)
    assert decay.relative_width == pytest.approx(2.0, abs=0.05)


def test_the_phase_change_of_the_later_fall_when_an_early_one_is_small():
    # The in-context loss of a run: a small early drift (bigram-like copying), then induction's big drop.
    series = logistic_fall(STEPS, 300, 40, depth=0.6) + logistic_fall(STEPS, 1200, 30, depth=3.4)
    fall = phase_change(STEPS, series, min_fall=1.0)
    assert fall.step == pytest.approx(1200 - 30 * math.log(3.4 / 1.4 - 1), abs=10)  # halfway down the whole fall
    assert 1100 < fall.start < fall.step < fall.end < 1300


def test_the_fall_is_measured_from_the_first_snapshot_not_from_a_bump_above_it():
    fall = phase_change([0, 100, 200, 300, 400], [0.0, 1.0, 0.0, -2.0, -2.0], min_fall=1.0)
    assert fall.depth == 2.0 and fall.step == 250  # halfway from 0 to -2, not from the bump's 1


def test_no_fall_or_too_few_snapshots_is_nan_with_a_reason():
    flat = phase_change(STEPS, np.zeros(len(STEPS)), min_fall=0.5)
    assert math.isnan(flat.step) and "less than min_fall=0.5" in flat.reason
    short = phase_change([1, 2], [0.0, -5.0], min_fall=0.5)
    assert math.isnan(short.step) and "2 finite snapshots" in short.reason


def test_missing_snapshots_are_skipped_and_order_does_not_matter():
    values = logistic_fall(STEPS, 800, 25)
    holed = values.copy()
    holed[5:10] = np.nan
    shuffled = np.random.default_rng(0).permutation(len(STEPS))
    expected = phase_change(STEPS, values, min_fall=1.0).step
    assert phase_change(STEPS, holed, min_fall=1.0).step == pytest.approx(expected)
    assert phase_change(STEPS[shuffled], values[shuffled], min_fall=1.0).step == pytest.approx(expected)


def test_loss_bump_is_the_rise_above_the_running_minimum_before_the_phase_change():
    steps = [0, 100, 200, 300, 400, 500, 600]
    losses = [4.0, 3.0, 3.1, 3.25, 3.2, 1.0, 1.5]  # a 0.25 rise up to step 300, then the drop
    assert loss_bump(steps, losses, until_step=450) == (pytest.approx(0.25), 300)
    assert loss_bump(steps, losses, until_step=150) == (0.0, 0)  # no rise yet
    assert loss_bump([0, 10, 20], [3.0, 2.0, 1.0], until_step=1000) == (0.0, 0)
    assert all(math.isnan(value) for value in loss_bump(steps, losses, until_step=-1))
