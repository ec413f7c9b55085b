"""MLP neuron statistics, and the recurrence's parameters, loss bins and linear probes against known answers."""

from __future__ import annotations

import math

import pytest
import torch

from lit_interp.analysis.neurons import dead_neuron_fraction, neuron_firing_frequency
from lit_interp.analysis.recurrence import (
    coefficient_bin_edges,
    held_out_r2,
    loss_by_coefficient_size,
    recurrence_parameters,
)

from .conftest import hooked


def test_neuron_with_a_large_negative_bias_is_dead():
    model = hooked(attn_only=False, d_mlp=4)
    with torch.no_grad():
        model.blocks[0].mlp.b_in[:] = torch.tensor([-1e4, 1e4, 0.0, 0.0])
        model.blocks[0].mlp.W_in[:, 2:] = 0  # exactly 0 in, relu(0) = 0: never fires
    _, cache = model.run_with_cache(torch.randint(0, 16, (4, 8)))
    frequency = neuron_firing_frequency(cache, n_layers=1)
    assert frequency[0, :3].tolist() == [0.0, 1.0, 0.0]
    assert dead_neuron_fraction(frequency).item() == pytest.approx(0.75 if frequency[0, 3] == 0 else 0.5)


@pytest.mark.parametrize("order", [1, 2])
def test_recurrence_parameters_are_recovered_from_the_sequence(order):
    coefficients, constant = torch.tensor([[0.5, -0.3][:order], [1.5, 0.2][:order]]), torch.randn(2, 3)
    terms = list(torch.randn(order, 2, 3))
    for _ in range(8):
        terms.append(constant + sum(coefficients[:, k - 1, None] * terms[-k] for k in range(1, order + 1)))
    vectors = torch.stack(terms, dim=1) * 0.7  # seed 002 rescales each sequence: c stays, d scales
    found_c, found_d = recurrence_parameters(vectors, order)
    torch.testing.assert_close(found_c, coefficients, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(found_d, 0.7 * constant, atol=1e-4, rtol=1e-4)


def test_loss_by_coefficient_size_bins_each_sequence_once():
    edges = coefficient_bin_edges((-2.0, 2.0), n_bins=2)
    assert edges == [0.0, 1.0, 2.0]
    targets = torch.zeros(3, 2, 1)
    output = torch.tensor([[0.0, 1.0, 1.0], [0.0, 2.0, 2.0], [0.0, 3.0, 3.0]])[..., None]
    losses = loss_by_coefficient_size(output, targets, 1, torch.tensor([[0.5], [-1.5], [2.0]]), edges)
    assert losses == {"loss_abs_c_0_to_1": 1.0, "loss_abs_c_1_to_2": 6.5}


def test_probe_r2_is_one_for_a_linear_target_and_nan_for_nan_features():
    features = torch.randn(200, 6)
    target = features @ torch.randn(6, 2) + 1.0
    assert held_out_r2(features, target, ridge=1e-6) == pytest.approx(1.0, abs=1e-6)
    assert held_out_r2(features, torch.randn(200, 2)) < 0.2  # noise: nothing to read out
    assert math.isnan(held_out_r2(torch.full((200, 6), float("nan")), target))
