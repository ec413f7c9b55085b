"""Seed 002's OV summaries on hand-set maps: the summed layer's line, the share of large entries, the maps stored."""

from __future__ import annotations

import math

import pytest
import torch

from lit_interp.analysis import run_analysis
from lit_interp.analysis.ov_summaries import (
    large_entry_fraction,
    linear_fit,
    random_unit_vectors,
    summed_ov_fit,
    summed_ov_outputs,
)
from lit_interp.analysis.weights import processed_copy

from .conftest import hooked, tiny_task


def scaling_heads(scales: list[float], normalization_type: str | None = None):
    """One layer whose head h maps x to scales[h] x (W_E = W_V = W_O = W_U = I): the layer sums to sum(scales) x."""
    model = hooked(n_heads=len(scales), d_head=16, normalization_type=normalization_type)
    with torch.no_grad():
        model.embed.W_E.copy_(torch.eye(16))
        model.unembed.W_U.copy_(torch.eye(16))
        for head, scale in enumerate(scales):
            model.blocks[0].attn.W_V[head] = scale * torch.eye(16)
            model.blocks[0].attn.W_O[head] = torch.eye(16)
    return model


def test_linear_fit_of_a_line_and_of_a_constant():
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    slope, r2 = linear_fit(x, 2 * x + 1)
    assert slope[0].item() == pytest.approx(2.0) and r2[0].item() == pytest.approx(1.0)
    assert math.isnan(slope[1]) and math.isnan(r2[1])  # no spread in x: no line
    _, r2 = linear_fit(x[:1], torch.tensor([[1.0, -1.0, -1.0, 1.0]]))
    assert r2.item() == pytest.approx(0.0, abs=1e-6)
    slope, r2 = linear_fit(x[:1], torch.tensor([[0.0, 2.0, 1.0, 3.0]]))  # correlation 0.8
    assert slope.item() == pytest.approx(0.8) and r2.item() == pytest.approx(0.64)


def test_the_summed_ov_fit_of_heads_scaling_by_2_and_3_has_slope_5():
    model = scaling_heads([2.0, 3.0])
    inputs = torch.randn(6, 16)
    torch.testing.assert_close(summed_ov_outputs(model, inputs, 0), 5 * inputs)
    fit = summed_ov_fit(model, inputs)
    assert fit["slope"].tolist() == pytest.approx([5.0]) and fit["r2"].tolist() == pytest.approx([1.0])
    random = random_unit_vectors(10, 16)
    assert random.min() >= 0 and torch.allclose(random.norm(dim=-1), torch.ones(10))


def test_the_final_norm_rescales_each_output_before_the_fit():
    model = scaling_heads([2.0], normalization_type="LNPre")  # a bare normalisation, as in the processed copy
    inputs = torch.randn(4, 16)
    outputs = summed_ov_outputs(model, inputs, 0)
    centred = 2 * inputs - (2 * inputs).mean(-1, keepdim=True)
    torch.testing.assert_close(outputs, centred / centred.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt())


def test_large_entry_fraction_counts_entries_beyond_the_threshold():
    matrices = torch.tensor([[[0.0, 0.06], [-0.07, 0.05]], [[1.0, 1.0], [1.0, float("nan")]]])
    fraction = large_entry_fraction(matrices)
    assert fraction[0].item() == 0.5 and math.isnan(fraction[1])


def test_the_snapshot_keeps_the_summaries_per_layer_and_head_and_the_maps_only_when_expensive():
    module, data = tiny_task("affine_recurrence")
    summary, tensors = run_analysis(module, data, step=0, probe_batch_size=8, hook_mean_ablation=False)
    processed = processed_copy(module.model, center_unembed=False)
    torch.testing.assert_close(tensors["ov_matrix.L1H0"], processed.OV[1, 0].AB)
    torch.testing.assert_close(tensors["qk_matrix.L0H1"], processed.QK[0, 1].AB)
    expected = large_entry_fraction(processed.OV.AB)[1, 1].item()
    assert summary["heads"]["L1H1"]["ov_large_entry_fraction"] == pytest.approx(expected)
    assert {"summed_ov_slope", "summed_ov_r2", "summed_ov_slope_random", "summed_ov_r2_random"} <= set(
        summary["layers"]["0"]
    )
    _, cheap = run_analysis(module, data, step=0, probe_batch_size=8, hook_mean_ablation=False, expensive=False)
    assert not any(name.startswith(("ov_matrix", "qk_matrix")) for name in cheap)
