"""Seed 003's logit difference: the metric, head attributions adding up, top-head shares, patching, backup heads."""

from __future__ import annotations

import math

import pytest
import torch

from lit_interp.analysis.logit_difference import (
    backup_against_naive,
    best_incorrect,
    head_logit_difference_attribution,
    logit_difference,
    logit_difference_patching,
    noise_reason,
    top_head_shares,
)
from lit_interp.analysis.weights import processed_copy
from lit_interp.tasks.base import Stream
from lit_interp.tasks.prev_token_digits import DigitsDataModule, PrevTokenDigitsModule

from .conftest import hooked
from .hand_built import previous_token_copier

TASK = PrevTokenDigitsModule(d_model=16)  # its loss and targets; the models are built here


def digits(n: int = 16) -> torch.Tensor:
    return DigitsDataModule().make_batch(Stream.PROBE, 0, n)


def test_logit_difference_is_correct_minus_best_incorrect():
    logits = torch.tensor([[1.0, 3.0, 2.5], [4.0, 0.0, 1.0]])
    targets = torch.tensor([1, 2])
    assert logit_difference(logits, targets).tolist() == [0.5, -3.0]
    assert best_incorrect(logits, targets).tolist() == [2, 0]


@pytest.mark.parametrize("normalization_type", [None, "LNPre"])
def test_head_attributions_add_up_to_the_logit_difference_less_embeddings_and_biases(normalization_type):
    model = hooked(n_layers=2, n_heads=2, d_vocab=10, n_ctx=10, normalization_type=normalization_type)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".b_" in name or name == "unembed.b_U":
                parameter.normal_()  # a forgotten bias cannot add up
    tokens = digits()
    logits, cache = model.run_with_cache(tokens)
    targets = TASK.targets(tokens)
    incorrect = best_incorrect(logits[:, 1:], targets)
    W_U = processed_copy(model, center_unembed=True).W_U
    heads = head_logit_difference_attribution(cache, W_U, targets, incorrect, first_target_pos=1)
    direction = (W_U[:, targets] - W_U[:, incorrect]).permute(1, 2, 0)
    rest = cache["resid_pre", 0][:, 1:] + sum(block.attn.b_O for block in model.blocks)
    if normalization_type:  # the final norm centres and rescales every component alike
        rest = (rest - rest.mean(-1, keepdim=True)) / cache["ln_final.hook_scale"][:, 1:]
    b_U = model.unembed.b_U
    expected = logit_difference(logits[:, 1:], targets) - (rest * direction).sum(-1) - (b_U[targets] - b_U[incorrect])
    assert heads.shape == (2, 2)
    assert heads.sum().item() == pytest.approx(expected.mean().item(), abs=1e-4)


def test_the_copying_head_carries_the_whole_logit_difference():
    model = previous_token_copier()
    tokens = digits()
    logits, cache = model.run_with_cache(tokens)
    targets = TASK.targets(tokens)
    clean = logit_difference(logits[:, 1:], targets)
    assert clean.min().item() == pytest.approx(10.0, abs=1e-3)  # logit 10 for the previous token, 0 elsewhere
    attribution = head_logit_difference_attribution(
        cache, model.W_U, targets, best_incorrect(logits[:, 1:], targets), 1
    )
    shares, summary = top_head_shares(attribution, clean)
    assert shares.item() == pytest.approx(1.0, abs=1e-4)
    assert summary["share_above_threshold"] == pytest.approx(1.0, abs=1e-4)
    assert summary["n_heads_above_threshold"] == 1 and summary["top_heads_share"] == pytest.approx(1.0, abs=1e-4)


def test_shares_of_a_logit_difference_within_noise_are_nan_with_the_reason():
    clean = torch.tensor([1.0, -1.0, 1.1, -0.9])
    shares, summary = top_head_shares(torch.tensor([[0.5]]), clean)
    assert torch.isnan(shares).all() and math.isnan(summary["top_heads_share"])
    assert "within 2 standard errors" in summary["reason"]
    assert noise_reason(torch.tensor([5.0, 5.1, 4.9]), "x") is None
    assert noise_reason(torch.tensor([5.0]), "x") == "x: fewer than 2 values"


def test_logit_difference_patching_restores_the_changed_input_and_the_head_that_moves_it():
    model = previous_token_copier(silent_heads=1)  # L0H1 reads the corrupted token but writes nothing
    tokens = digits()
    logits, cache = model.run_with_cache(tokens)
    summary, tensors = logit_difference_patching(model, TASK, tokens, logits, cache, bos_token=None)
    assert summary["clean_logit_difference"] == pytest.approx(10.0, abs=1e-3)
    assert summary["corrupted_logit_difference"] == pytest.approx(-10.0, abs=1e-3)  # the corrupted token wins by 10
    residual = tensors["resid_pre_patching_logit_difference"]
    expected = torch.zeros(1, 10)
    expected[0, -2] = 1.0  # the corrupted token's own position
    torch.testing.assert_close(residual, expected, atol=1e-4, rtol=0)
    assert tensors["head_patching_logit_difference"].tolist() == [[pytest.approx(1.0, abs=1e-4), 0.0]]


def test_patching_a_corruption_that_changes_nothing_is_nan_with_the_reason():
    model = hooked(d_vocab=10, n_ctx=10)
    with torch.no_grad():
        model.unembed.W_U.zero_()  # every logit 0: clean and corrupted runs are the same
    tokens = digits()
    logits, cache = model.run_with_cache(tokens)
    summary, tensors = logit_difference_patching(model, TASK, tokens, logits, cache, bos_token=None)
    assert "within 2 standard errors" in summary["reason"]
    assert all(torch.isnan(tensor).all() for tensor in tensors.values())


def test_backup_without_later_layers_is_the_naive_prediction():
    model = previous_token_copier()
    tokens = digits()
    logits, cache = model.run_with_cache(tokens)
    summary, change = backup_against_naive(model, TASK, tokens, logits, cache, model.W_U)
    assert (summary["ablated_layer"], summary["ablated_head"]) == (0, 0)
    assert summary["clean_logit_difference"] == pytest.approx(10.0, abs=1e-3)
    assert summary["naive_prediction"] == pytest.approx(0.0, abs=1e-3)  # the head was all of it
    assert summary["ablated_logit_difference"] == pytest.approx(0.0, abs=1e-3)  # every logit 0 without it
    assert change.item() == pytest.approx(-10.0, abs=1e-3)
    assert "ln_final_scale_ratio" not in summary  # no final norm


def test_backup_reports_the_final_norm_scale_ratio():
    model = hooked(n_heads=2, d_vocab=10, n_ctx=10, normalization_type="LNPre")
    tokens = digits()
    logits, cache = model.run_with_cache(tokens)
    summary, change = backup_against_naive(model, TASK, tokens, logits, cache, model.W_U)
    head = summary["ablated_head"]

    def ablate(z, hook):
        z[:, :, head] = 0.0
        return z

    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_z", ablate)]):
        _, ablated = model.run_with_cache(tokens)
    ratio = cache["ln_final.hook_scale"][:, 1:] / ablated["ln_final.hook_scale"][:, 1:]
    assert summary["ln_final_scale_ratio"] == pytest.approx(ratio.mean().item(), rel=1e-5)
    assert summary["ln_final_scale_ratio"] != pytest.approx(1.0, abs=1e-3)
