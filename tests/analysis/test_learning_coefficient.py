"""The local learning coefficient through devinterp (skipped without the devinterp extra)."""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest
import torch

from lit_interp.analysis import builtin, run_analysis
from lit_interp.analysis.learning_coefficient import (
    LLCSettings,
    local_learning_coefficient,
    training_sequences,
    wants_learning_coefficient,
)
from lit_interp.tasks.base import Stream
from lit_interp.tasks.induction import InductionDataModule, InductionModule

pytest.importorskip("devinterp")

FAST = LLCSettings(num_chains=2, num_draws=40, n_sequences=256, batch_size=32)


@pytest.fixture(scope="module")
def trained():
    """A tiny induction model trained 150 steps: near a minimum, as an LLC estimate needs."""
    torch.manual_seed(0)
    data = InductionDataModule(n_ctx=12, d_vocab=12, max_noise_len=4, batch_size=32)
    module = InductionModule(n_ctx=12, d_vocab=12, d_model=16, n_heads=2, d_head=8, lr=3e-3)
    optimizer = module.configure_optimizers()["optimizer"]
    for index in range(150):
        batch = data.make_batch(Stream.TRAIN, index, 32)
        loss = module.loss(module(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    module.eval()
    return module, data


def test_the_estimate_is_finite_positive_and_lower_with_fewer_parameters_sampled(trained):
    module, data = trained
    sequences = training_sequences(data, FAST.n_sequences, "cpu")
    full = local_learning_coefficient(module.model, module, sequences, FAST)
    assert math.isfinite(full["llc_mean"]) and full["llc_mean"] > 0 and full["llc_std"] >= 0
    assert full["init_loss"] == pytest.approx(module.loss(module(sequences), sequences).item(), rel=1e-4)
    assert {name: full[name] for name in dataclasses.asdict(FAST)} == dataclasses.asdict(FAST)

    restricted = module.model
    for name, parameter in restricted.named_parameters():
        parameter.requires_grad_(name.startswith("blocks.1."))  # only layer 1's heads are sampled
    try:
        fewer = local_learning_coefficient(restricted, module, sequences, FAST)
    finally:
        for parameter in restricted.parameters():
            parameter.requires_grad_(True)
    assert 0 < fewer["llc_mean"] < 0.8 * full["llc_mean"]


def test_the_model_its_modes_the_global_rngs_and_grad_mode_are_left_as_they_were(trained):
    module, data = trained
    module.model.train()
    module.model.blocks[0].eval()  # a mixed state must come back as it was
    modes = {name: submodule.training for name, submodule in module.model.named_modules()}
    weights = {name: tensor.clone() for name, tensor in module.state_dict().items()}
    torch.manual_seed(123)  # devinterp seeds all three with seed + chain: start them elsewhere
    np.random.seed(123)
    random.seed(123)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    sequences = training_sequences(data, FAST.n_sequences, "cpu")
    try:
        with torch.no_grad():
            local_learning_coefficient(module.model, module, sequences, dataclasses.replace(FAST, num_draws=5))
            assert not torch.is_grad_enabled()
        assert {name: submodule.training for name, submodule in module.model.named_modules()} == modes
    finally:
        module.eval()
    assert all(torch.equal(tensor, weights[name]) for name, tensor in module.state_dict().items())
    assert torch.equal(torch.get_rng_state(), states[0])
    assert (np.random.get_state()[1] == states[1]).all() and random.getstate() == states[2]


def test_chains_that_diverge_give_nan_not_their_last_finite_numbers(trained):
    module, data = trained
    sequences = training_sequences(data, FAST.n_sequences, "cpu")
    estimate = local_learning_coefficient(module.model, module, sequences, dataclasses.replace(FAST, lr=1.0))
    assert math.isnan(estimate["llc_mean"]) and math.isnan(estimate["llc_std"])


def test_a_diverged_model_gets_nan(trained):
    module, data = trained
    broken = InductionModule(n_ctx=12, d_vocab=12, d_model=16, n_heads=2, d_head=8)
    with torch.no_grad():
        for parameter in broken.parameters():
            parameter.fill_(float("nan"))
    estimate = local_learning_coefficient(broken.model, broken, training_sequences(data, 64, "cpu"), FAST)
    assert math.isnan(estimate["llc_mean"]) and math.isnan(estimate["llc_std"])


def test_the_snapshot_runs_it_only_for_tasks_that_ask_and_only_when_expensive(trained, monkeypatch):
    module, data = trained
    monkeypatch.setattr(builtin, "LLC_SETTINGS", dataclasses.replace(FAST, num_draws=5))
    assert not wants_learning_coefficient(module)
    summary, _ = run_analysis(module, data, step=1, probe_batch_size=8, hook_mean_ablation=False)
    assert "learning_coefficient" not in summary
    module.hparams.learning_coefficient = True
    try:
        cheap, _ = run_analysis(module, data, step=1, probe_batch_size=8, hook_mean_ablation=False, expensive=False)
        full, _ = run_analysis(module, data, step=1, probe_batch_size=8, hook_mean_ablation=False)
    finally:
        module.hparams.learning_coefficient = False
    assert "learning_coefficient" not in cheap
    assert full["learning_coefficient"]["num_draws"] == 5 and math.isfinite(full["learning_coefficient"]["llc_mean"])
