"""Neuron statistics and circuits, the embedding subspace, and the recurrence analyses against known answers."""

from __future__ import annotations

import math

import pytest
import torch

from lit_interp.analysis.attribution import outside_subspace_fraction
from lit_interp.analysis.circuits import embedding_subspace, ov_neuron_circuits
from lit_interp.analysis.neurons import dead_neuron_fraction, neuron_activation_by_position, neuron_firing_frequency
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


def test_ov_neuron_circuit_matches_seed_formula_and_positions_average_to_the_total():
    model = hooked(n_layers=2, attn_only=False, d_mlp=8, n_heads=2, d_head=8)
    circuits = ov_neuron_circuits(model)
    assert circuits.shape == (2, 2, 16, 8)
    torch.testing.assert_close(circuits[1, 0], model.W_E @ model.OV[1, 0].AB @ model.W_in[1], rtol=1e-4, atol=1e-5)
    _, cache = model.run_with_cache(torch.randint(0, 16, (4, 8)))
    by_position = neuron_activation_by_position(cache, n_layers=2)
    assert by_position["mean_activation"].shape == (2, 8, 8)
    torch.testing.assert_close(by_position["firing_frequency"].mean(1), neuron_firing_frequency(cache, n_layers=2))


def test_outside_embedding_fraction_is_zero_inside_and_one_orthogonal():
    model = hooked(n_layers=1, d_vocab=4)
    with torch.no_grad():
        model.embed.W_E[:] = torch.eye(16)[:4] * 2  # the embedding spans dims 0-3
        model.blocks[0].attn.W_O[0] = torch.zeros(16, 16)
        model.blocks[0].attn.W_O[0, :, :4] = torch.randn(16, 4)  # writes inside the span
    basis = embedding_subspace(model.W_E)
    assert basis.shape == (16, 4)
    _, cache = model.run_with_cache(torch.randint(0, 4, (3, 8)))
    assert outside_subspace_fraction(cache, basis)["attn_out"].item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        model.blocks[0].attn.W_O[0] = torch.zeros(16, 16)
        model.blocks[0].attn.W_O[0, :, 8:] = torch.randn(16, 8)  # writes orthogonally to it
    _, cache = model.run_with_cache(torch.randint(0, 4, (3, 8)))
    assert outside_subspace_fraction(cache, basis)["attn_out"].item() == pytest.approx(1.0, abs=1e-6)
