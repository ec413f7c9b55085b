"""Slow: the CPU-sized modular addition config groks in the order Nanda et al. 2023 found, read from its snapshots."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONFIGS, QUIET

from lit_interp.analysis import fourier
from lit_interp.commands.train import run_cli
from lit_interp.snapshots import read_snapshots

pytestmark = pytest.mark.slow


def first_step(steps: list[int], values: list[float], reached) -> int | None:
    return next((step for step, value in zip(steps, values) if reached(value)), None)


def test_modular_addition_memorises_then_generalises_through_a_few_key_frequencies():
    cli = run_cli(["fit", "--config", str(CONFIGS / "modular_addition_cpu.yaml"), "--trainer.max_steps=3000", *QUIET])
    run = Path(cli.trainer.log_dir)
    stored = read_snapshots(run)
    steps = stored.steps
    snapshots = [(snapshot.summary, snapshot.torch_tensors()) for snapshot in stored]
    measures = {
        key: [summary["progress_measures"][key] for summary, _ in snapshots]
        for key in snapshots[0][0]["progress_measures"]
    }
    last = snapshots[-1][0]

    memorised = first_step(steps, measures["train_acc"], lambda acc: acc == 1.0)
    generalised = first_step(steps, measures["test_acc"], lambda acc: acc >= 0.99)
    assert memorised is not None and generalised is not None, (memorised, generalised)
    assert generalised >= 10 * memorised, "train accuracy reaches 1.0 long before test accuracy"
    at_memorised = steps.index(memorised)
    assert measures["test_acc"][at_memorised] <= 0.5 and measures["test_loss"][at_memorised] >= 5.0
    assert measures["test_acc"][-1] >= 0.99

    keys = last["fourier"]["key_frequencies"]
    assert 1 <= len(keys) <= 8 and last["fourier"]["key_neuron_fraction"] >= 0.7, last["fourier"]
    paper = [fourier.losses_with(tensors, keys) for _, tensors in snapshots]  # every snapshot, the final keys
    restricted = [losses["restricted_loss"] for losses in paper]
    excluded = [losses["excluded_loss"] for losses in paper]
    restricted_falls = first_step(steps, restricted, lambda loss: loss < 1.0)
    test_falls = first_step(steps, measures["test_loss"], lambda loss: loss < 1.0)
    assert restricted_falls is not None and restricted_falls < test_falls, (restricted_falls, test_falls)
    assert excluded[steps.index(generalised)] >= 3 * excluded[at_memorised], "excluded loss rises"
    assert excluded[steps.index(generalised)] >= 10 * measures["train_loss"][steps.index(generalised)]

    # With each snapshot's own key frequencies the same order shows.
    assert first_step(steps, measures["restricted_loss"], lambda loss: loss < 1.0) < test_falls
    assert max(measures["excluded_loss"]) >= 3 * measures["excluded_loss"][at_memorised]
    gini = [summary["fourier"]["embed_gini"] for summary, _ in snapshots]
    assert gini[-1] >= gini[at_memorised] + 0.2, "the embedding grows sparse in the Fourier basis"
    assert measures["sum_squared_weights"][-1] < max(measures["sum_squared_weights"]), "weight decay cleans up"
