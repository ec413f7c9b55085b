"""Neuron statistics and circuits, the embedding subspace, and the recurrence analyses against known answers."""

from __future__ import annotations

import math

import pytest
import torch

from lit_interp.analysis.attribution import outside_subspace_fraction, outside_subspace_ratio
from lit_interp.analysis.builtin import embedding_subspace as embedding_subspace_analysis
from lit_interp.analysis.circuits import embedding_subspace, ov_neuron_circuits
from lit_interp.analysis.neurons import dead_neuron_fraction, neuron_activation_by_position, neuron_firing_frequency
from lit_interp.analysis.recurrence import (
    coefficient_bin_edges,
    cross_validated_r2,
    last_position_residuals,
    loss_by_coefficient_size,
    parameter_probes,
    recurrence_parameters,
    too_few_rows,
)
from lit_interp.analysis.registry import AnalysisContext
from lit_interp.analysis.weights import centres_writing_weights, processed_copy
from lit_interp.tasks.affine_recurrence import AffineRecurrenceDataModule, AffineRecurrenceModule
from lit_interp.tasks.base import Stream

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


def test_probe_r2_is_one_for_a_planted_linear_signal_and_its_shuffled_baseline_zero():
    features = torch.randn(2048, 16)
    target = features @ torch.randn(16, 2) + 1.0 + 0.01 * torch.randn(2048, 2)
    assert cross_validated_r2(features, target, ridge=1e-6) == pytest.approx(1.0, abs=1e-3)
    shuffled = target[torch.randperm(2048)]
    assert cross_validated_r2(features, shuffled) == pytest.approx(0.0, abs=0.02)  # nothing left to read out
    assert cross_validated_r2(features, torch.randn(2048, 2)) == pytest.approx(0.0, abs=0.02)
    assert math.isnan(cross_validated_r2(torch.full((2048, 16), float("nan")), target))


def test_probe_r2_is_out_of_fold():
    """Every row is predicted by a fit that never saw it: 30 features fit most of a pure-noise target on 40 rows
    in-sample, and score below zero out of fold."""
    features, target = torch.randn(40, 30), torch.randn(40, 1)
    design = torch.cat([features, torch.ones(40, 1)], dim=1)
    in_sample = design @ torch.linalg.lstsq(design, target).solution
    assert 1 - (in_sample - target).pow(2).sum() / (target - target.mean()).pow(2).sum() > 0.5
    assert cross_validated_r2(features, target, ridge=1e-6) < 0


def test_too_few_rows_give_nan_with_the_reason():
    features = torch.randn(20, 16)  # 5 folds of 4: 16 training rows for 17 parameters
    assert math.isnan(cross_validated_r2(features, features[:, :2]))
    assert "16 training rows for 17 probe parameters" in too_few_rows(20, 16)
    assert too_few_rows(2048, 128) is None
    model = hooked(n_layers=1, d_model=16, d_vocab=4)
    residuals = last_position_residuals(model, torch.randint(0, 4, (20, 8)))
    r2, section = parameter_probes(residuals, torch.randn(20, 1), torch.randn(20, 3))
    assert set(r2) == {"c", "c_shuffled", "d", "d_shuffled"} and all(math.isnan(v) for vs in r2.values() for v in vs)
    assert section["sequences"] == 20 and "training rows" in section["reason"]


def test_probes_read_a_planted_parameter_from_the_residual_stream():
    """The embedding writes c into the residual stream linearly: the probe reads it (R² ≈ 1) at every layer,
    the shuffled baseline reads nothing, and the section states no reason."""
    model = hooked(n_layers=1, d_model=16, d_vocab=16)
    tokens = torch.randint(0, 16, (2048, 8))
    c = model.W_E[tokens[:, -1]] @ torch.randn(16, 1)  # a linear function of the last position's embedding
    with torch.no_grad():
        model.blocks[0].attn.W_O.zero_()  # the residual stream stays the embedding
    residuals = last_position_residuals(model, tokens, chunk=500)
    _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(residuals, cache.accumulated_resid(layer=None, incl_mid=False)[:, :, -1])
    r2, section = parameter_probes(residuals, c, torch.randn(2048, 3))
    assert r2["c"] == pytest.approx([1.0, 1.0], abs=1e-3)
    assert r2["c_shuffled"] == pytest.approx([0.0, 0.0], abs=0.02)
    assert r2["d"] == pytest.approx([0.0, 0.0], abs=0.02)  # noise: nothing to read
    assert section == {"sequences": 2048, "folds": 5, "features": 16}
    final = cache.accumulated_resid(layer=None, incl_mid=False)[-1, :, -1]
    assert r2["c"][-1] == pytest.approx(cross_validated_r2(final, c), rel=1e-9)  # one fit per fold serves all targets


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


def test_seed_002_ratio_weighs_every_vector_alike_where_the_pooled_fraction_weighs_by_norm():
    basis = torch.eye(16)[:, :4]  # the span of dims 0-3
    inside, outside = 3 * torch.eye(16)[0], torch.eye(16)[8]
    vectors = torch.stack([inside, outside, torch.zeros(16)])  # a zero vector is left out
    assert outside_subspace_ratio(vectors, basis) == pytest.approx(0.5)  # (0 + 1) / 2; pooled norm²: 1 / (9 + 1)
    halfway = torch.eye(16)[0] + torch.eye(16)[8]
    assert outside_subspace_ratio(halfway[None], basis) == pytest.approx(2**-0.5)  # a norm ratio, not a squared one
    assert math.isnan(outside_subspace_ratio(torch.zeros(3, 16), basis))


def test_block_outside_ratio_is_seed_002s_loop_on_the_processed_model():
    module = AffineRecurrenceModule(
        n_ctx=9, d_vocab=5, first_target_pos=2, n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32
    )
    data = AffineRecurrenceDataModule(vector_dim=5, seq_len=10)
    with torch.no_grad():
        for parameter in module.model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)  # LayerNorm biases and scales far from 0 and 1
    batch = data.make_batch(Stream.PROBE, 0, 4)
    model = module.model.eval()
    with torch.no_grad():
        output, cache = model.run_with_cache(module.model_input(batch))
        context = AnalysisContext(model, module, data, batch, output, cache)
        summary, _ = embedding_subspace_analysis(context)
        processed = processed_copy(model, center_unembed=False)
        _, processed_cache = processed.run_with_cache(module.model_input(batch))
    _, _, v = torch.linalg.svd(processed.W_E)
    for layer in range(2):  # the seed's loop (it reads layer 0): every sequence and position, rows 0..d_vocab-1 of v
        total = 0.0
        for sequence in range(4):
            for pos in range(9):
                added = (
                    processed_cache["resid_post", layer][sequence, pos]
                    - processed_cache["resid_pre", layer][sequence, pos]
                )
                in_span = sum((added @ v[row]) * v[row] for row in range(5))
                total += ((added - in_span).norm() / added.norm()).item()
        expected = total / (4 * 9)
        assert summary["layers"][str(layer)]["block_out_outside_embedding_ratio"] == pytest.approx(expected, rel=1e-4)
        assert 0.1 < expected < 0.99


@pytest.mark.parametrize("normalization_type", ["LN", "LNPre", "RMS", None])
def test_the_centring_rule_is_what_the_processed_copy_does(normalization_type):
    model = hooked(normalization_type=normalization_type)
    with torch.no_grad():
        model.embed.W_E.add_(1.0)  # rows far from mean zero
    centred = processed_copy(model, center_unembed=True).W_E.mean(-1).abs().max() < 1e-6
    assert centres_writing_weights(model.cfg) == centred == (normalization_type in ("LN", "LNPre"))
