"""Activation patching: the corrupted pair changes one input, and patching scores 1 where it restores the clean run."""

from __future__ import annotations

import pytest
import torch

from lit_interp.analysis.patching import (
    activation_patching,
    corrupt_previous,
    last_position_loss,
    patch_heads,
    patch_residual,
)
from lit_interp.tasks.base import Stream

from .conftest import tiny_task


def test_corruption_replaces_only_the_input_the_last_answer_comes_from():
    tokens = torch.tensor([[5, 1, 2, 3], [5, 3, 4, 2]])
    corrupted = corrupt_previous(tokens, bos_token=5, d_vocab=6)
    assert corrupted.tolist() == [[5, 1, 3, 3], [5, 3, 0, 2]]  # 4 + 1 = 5 is BOS, so it wraps on to 0
    vectors = torch.randn(3, 5, 2)
    corrupted = corrupt_previous(vectors, bos_token=None, d_vocab=2)
    assert torch.equal(corrupted[:, 3], vectors.roll(1, dims=0)[:, 3])  # the last of the 4 vectors the model reads
    assert torch.equal(corrupted[:, [0, 1, 2, 4]], vectors[:, [0, 1, 2, 4]])


@pytest.mark.parametrize("task", ["bos_ints_mlp", "affine_recurrence"])
def test_patching_the_changed_input_restores_the_clean_run_and_others_change_nothing(task):
    module, data = tiny_task(task)
    batch = data.make_batch(Stream.PROBE, 0, 8)
    _, clean_cache = module.model.run_with_cache(module.model_input(batch))
    losses, tensors = activation_patching(module.model, module, batch, clean_cache, getattr(data, "bos_token", None))
    assert losses["clean_last_position_loss"] != pytest.approx(losses["corrupted_last_position_loss"])
    residual = tensors["resid_pre_patching"]
    n_layers, n_pos = module.model.cfg.n_layers, module.model.cfg.n_ctx
    assert residual.shape == (n_layers, n_pos) and tensors["head_patching"].shape == (
        n_layers,
        module.model.cfg.n_heads,
    )
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
