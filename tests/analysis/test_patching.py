"""Activation patching: corruptions that change the answer, scores of 1 where a patch restores the clean run,
and NaN with the reason when the clean-corrupted gap is within the metric's noise."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lit_interp.analysis.patching import (
    activation_patching,
    corrupt_previous,
    half_batch_difference,
    last_position_loss,
    patch_heads,
    patch_residual,
    within_noise,
)
from lit_interp.analysis.recurrence import recurrence_parameters, with_other_parameters
from lit_interp.tasks.base import Stream

from .conftest import hooked, tiny_task

COPY_LOGIT = 10.0  # the hand-built previous-token head's logit for the token it copies


def test_corruption_replaces_only_the_input_the_last_answer_comes_from():
    tokens = torch.tensor([[5, 1, 2, 3], [5, 3, 4, 2]])
    corrupted = corrupt_previous(tokens, bos_token=5, d_vocab=6)
    assert corrupted.tolist() == [[5, 1, 3, 3], [5, 3, 0, 2]]  # 4 + 1 = 5 is BOS, so it wraps on to 0
    vectors = torch.randn(3, 5, 2)
    corrupted = corrupt_previous(vectors, bos_token=None, d_vocab=2)
    assert torch.equal(corrupted[:, 3], vectors.roll(1, dims=0)[:, 3])  # the last of the 4 vectors the model reads
    assert torch.equal(corrupted[:, [0, 1, 2, 4]], vectors[:, [0, 1, 2, 4]])


@pytest.mark.parametrize("task", ["prev_token_digits", "bos_ints_attn_only", "bos_ints_mlp", "modular_addition"])
def test_token_corruption_changes_the_last_answer_of_every_sequence(task):
    module, data = tiny_task(task)
    batch = data.make_batch(Stream.PROBE, 0, 256)
    d_vocab_out = module.model.cfg.d_vocab_out  # what activation_patching passes: answers only, never "="
    corrupted = corrupt_previous(batch, getattr(data, "bos_token", None), d_vocab_out)
    assert (module.targets(corrupted)[:, -1] != module.targets(batch)[:, -1]).all()
    changed = corrupted[:, -2] != batch[:, -2]
    assert changed.all() and (corrupted[:, -2] < d_vocab_out).all()
    if hasattr(data, "bos_token"):
        assert (corrupted[:, 1:] != data.bos_token).all()


def test_recurrence_corruption_takes_the_next_sequence_c_and_d():
    _, data = tiny_task("affine_recurrence")
    vectors = data.make_batch(Stream.PROBE, 0, 16)
    corrupted = with_other_parameters(vectors, order=1)
    coefficients, constant = recurrence_parameters(vectors, 1)
    found_c, found_d = recurrence_parameters(corrupted, 1)
    torch.testing.assert_close(found_c, coefficients.roll(1, dims=0), atol=1e-4, rtol=1e-4)
    scale = corrupted[:, 0].norm(dim=-1) / vectors[:, 0].norm(dim=-1)  # its own first vector, rescaled
    torch.testing.assert_close(corrupted[:, 0], vectors[:, 0] * scale[:, None])
    torch.testing.assert_close(found_d, constant.roll(1, dims=0) * scale[:, None], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(corrupted.norm(dim=-1).amax(1), vectors.norm(dim=-1).amax(1))  # the same size
    assert ((corrupted[:, -1] - vectors[:, -1]).norm(dim=-1) > 1e-3).all()  # every last answer changes


def previous_token_model(query_scale: float = 400.0):
    """Tokens in dims 0-7, positions in dims 8-15; the head attends from p to p - 1 (score query_scale / 4 there,
    0 elsewhere) and adds COPY_LOGIT to the logit of the token it attends to; the direct path adds 1 to the current
    token's logit."""
    model = hooked(d_vocab=8, n_ctx=8)
    attn = model.blocks[0].attn
    with torch.no_grad():
        model.embed.W_E[:] = torch.eye(16)[:8]
        model.pos_embed.W_pos[:] = torch.eye(16)[8:]
        model.unembed.W_U[:] = torch.eye(16)[:, :8]
        attn.W_Q[0] = 0.0
        attn.W_K[0] = 0.0
        for pos in range(8):
            attn.W_Q[0, 8 + pos, pos] = query_scale  # query at p reads f_p
            if pos + 1 < 8:
                attn.W_K[0, 8 + pos, pos + 1] = 1.0  # key at p reads f_{p+1}: scores 100 for key p - 1 only
        attn.W_V[0] = torch.eye(16) * torch.cat([torch.ones(8), torch.zeros(8)])
        attn.W_O[0] = COPY_LOGIT * torch.eye(16)
    return model


class PreviousToken:
    """The previous-token task on raw tokens, without a Lightning module."""

    hparams = type("hparams", (), {"first_target_pos": 1})

    def model_input(self, tokens):
        return tokens

    def targets(self, tokens):
        return tokens[:, :-1]

    def loss(self, logits, tokens):
        return F.cross_entropy(logits[:, 1:].flatten(0, 1), tokens[:, :-1].flatten())


def expected_last_loss(tokens, answers):
    """The hand-built model's last-position loss against `answers`: logit 1 on the current token, COPY_LOGIT on the
    previous one."""
    logits = F.one_hot(tokens[:, -1], 8).float() + COPY_LOGIT * F.one_hot(tokens[:, -2], 8).float()
    return F.cross_entropy(logits, answers).item()


def test_a_corruption_of_known_effect_gives_its_gap_and_full_restoration_by_the_head():
    model, task = previous_token_model(), PreviousToken()
    tokens = torch.randint(0, 8, (64, 8))
    corrupted = corrupt_previous(tokens, bos_token=None, d_vocab=8)
    _, clean_cache = model.run_with_cache(tokens)
    summary, tensors = activation_patching(model, task, tokens, corrupted, clean_cache)
    answers = tokens[:, -2]
    assert summary["clean_last_position_loss"] == pytest.approx(expected_last_loss(tokens, answers), abs=1e-5)
    assert summary["corrupted_last_position_loss"] == pytest.approx(expected_last_loss(corrupted, answers), rel=1e-5)
    assert summary["loss_gap"] > 9 and summary["loss_gap"] > 100 * summary["loss_noise"] and "reason" not in summary
    assert tensors["head_patching"].item() == pytest.approx(1.0, abs=1e-5)  # the head carries the whole answer
    residual = tensors["resid_pre_patching"][0]
    assert residual[6].item() == pytest.approx(1.0, abs=1e-5)  # the corrupted token itself
    torch.testing.assert_close(residual[[0, 1, 2, 3, 4, 5, 7]], torch.zeros(7), atol=1e-5, rtol=0)


def test_a_corruption_without_effect_gives_nan_scores_and_the_reason():
    model, task = previous_token_model(), PreviousToken()
    tokens = torch.randint(0, 8, (64, 8))
    _, clean_cache = model.run_with_cache(tokens)
    unchanged_answer = tokens.clone()
    unchanged_answer[:, 0] = (tokens[:, 0] + 1) % 8  # a token the last position never reads
    for corrupted in (tokens, unchanged_answer):
        summary, tensors = activation_patching(model, task, tokens, corrupted, clean_cache)
        assert summary["loss_gap"] == pytest.approx(0.0, abs=1e-6)
        assert "not more than its noise" in summary["reason"]
        assert tensors == {}  # no patched run, no score tensor


def test_a_gap_within_the_noise_is_refused():
    """A head that attends only loosely (score 1 against 0) gets each sequence's answer partly right, so the clean
    loss varies between sequences; corrupting one sequence's answer moves the batch mean by less than that."""
    model, task = previous_token_model(query_scale=4.0), PreviousToken()
    tokens = torch.randint(0, 8, (64, 8))
    corrupted = tokens.clone()
    corrupted[0] = corrupt_previous(tokens[:1], bos_token=None, d_vocab=8)
    _, clean_cache = model.run_with_cache(tokens)
    summary, tensors = activation_patching(model, task, tokens, corrupted, clean_cache)
    assert 0 < summary["loss_gap"] < summary["loss_noise"]
    assert "reason" in summary and tensors == {}
    summary, tensors = activation_patching(model, task, tokens, corrupt_previous(tokens, None, 8), clean_cache)
    assert summary["loss_gap"] > summary["loss_noise"] and "reason" not in summary  # every sequence corrupted
    assert torch.isfinite(tensors["head_patching"]).all()


def test_the_noise_is_the_difference_between_the_two_halves_and_bounds_the_gap():
    assert half_batch_difference(torch.tensor([1.0, 1.0, 3.0, 3.0])) == 2.0
    assert math.isnan(half_batch_difference(torch.tensor([1.0])))
    assert within_noise(3.0, 2.0) is None
    assert "by 2, not more than its noise 2" in within_noise(2.0, 2.0)
    assert within_noise(-1.0, 0.5) is not None  # a corruption that helps the clean answer is no corruption
    assert within_noise(float("nan"), 0.1) is not None and within_noise(1.0, float("nan")) is not None


@pytest.mark.parametrize("task", ["bos_ints_mlp", "affine_recurrence"])
def test_patching_the_changed_input_restores_the_clean_run_and_others_change_nothing(task):
    module, data = tiny_task(task)
    batch = data.make_batch(Stream.PROBE, 0, 8)
    metric = last_position_loss(module, batch)
    clean_output, clean_cache = module.model.run_with_cache(module.model_input(batch))
    corrupted = corrupt_previous(batch, getattr(data, "bos_token", None), data.d_vocab)
    corrupted_output, corrupted_cache = module.model.run_with_cache(module.model_input(corrupted))
    clean, corrupted_loss = metric(clean_output), metric(corrupted_output)
    assert clean != pytest.approx(corrupted_loss)
    residual = patch_residual(module.model, metric, clean_cache, corrupted_cache, clean, corrupted_loss)
    n_layers, n_pos = module.model.cfg.n_layers, module.model.cfg.n_ctx
    assert residual.shape == (n_layers, n_pos)
    changed = n_pos - 2 if task == "bos_ints_mlp" else n_pos - 1  # the token before the last; the last vector read
    assert residual[0, changed].item() == pytest.approx(1.0, abs=1e-5)  # the clean input itself: the clean run
    unchanged = [pos for pos in range(n_pos) if pos != changed]
    torch.testing.assert_close(residual[0, unchanged], torch.zeros(n_pos - 1), atol=1e-5, rtol=0)


def test_clean_into_clean_scores_one_and_corrupted_into_corrupted_zero():
    module, data = tiny_task("bos_ints_attn_only")
    batch = data.make_batch(Stream.PROBE, 0, 8)
    metric = last_position_loss(module, batch)
    clean_output, clean_cache = module.model.run_with_cache(batch)
    corrupted_output, corrupted_cache = module.model.run_with_cache(corrupt_previous(batch, data.bos_token, 101))
    clean, corrupted = metric(clean_output), metric(corrupted_output)
    for patch in (patch_residual, patch_heads):
        ones = patch(module.model, metric, clean_cache, clean_cache, clean, corrupted)
        zeros = patch(module.model, metric, corrupted_cache, corrupted_cache, clean, corrupted)
        torch.testing.assert_close(ones, torch.ones_like(ones), atol=1e-4, rtol=0)
        torch.testing.assert_close(zeros, torch.zeros_like(zeros), atol=1e-4, rtol=0)
