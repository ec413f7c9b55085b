"""Head ablations and seed 004's mean-ablation sweep, against losses computed by hand."""

from __future__ import annotations

import copy

import pytest
import torch

from lit_interp.analysis import losses as losses_module
from lit_interp.analysis.ablation import head_ablation_losses, hook_mean_ablation_losses, sweep_hook_names
from lit_interp.analysis.losses import edited_losses, first_layer_reached, task_loss
from lit_interp.tasks.base import Stream

from .conftest import tiny_task


def test_zero_ablating_a_head_equals_removing_its_output_weights():
    module, data = tiny_task("affine_recurrence")
    batch = data.make_batch(Stream.PROBE, 0, 8)
    losses = head_ablation_losses(module.model, module, batch, "zero")
    assert losses.shape == (2, 2)
    for layer, head in [(0, 1), (1, 0)]:
        edited = copy.deepcopy(module.model)
        with torch.no_grad():
            edited.blocks[layer].attn.W_O[head] = 0
        assert losses[layer, head].item() == pytest.approx(task_loss(edited, module, batch), rel=1e-5)


def test_mean_ablation_on_one_sequence_changes_nothing():
    module, data = tiny_task("bos_ints_attn_only")
    batch = data.make_batch(Stream.PROBE, 0, 1)  # the batch mean of one sequence is that sequence
    clean = task_loss(module.model, module, batch)
    torch.testing.assert_close(head_ablation_losses(module.model, module, batch, "mean"), torch.full((2, 1), clean))
    assert all(
        loss == pytest.approx(clean, rel=1e-5)
        for loss in hook_mean_ablation_losses(module.model, module, batch).values()
    )


def test_mean_ablation_differs_from_zero_ablation():
    module, data = tiny_task("bos_ints_attn_only")
    batch = data.make_batch(Stream.PROBE, 0, 8)
    zero, mean = (head_ablation_losses(module.model, module, batch, mode) for mode in ("zero", "mean"))
    assert not torch.allclose(zero, mean)


def test_sweep_covers_every_hook_in_forward_order_but_positional_embedding():
    module, data = tiny_task("bos_ints_mlp")
    names = sweep_hook_names(module.model, module, data.make_batch(Stream.PROBE, 0, 2))
    assert names[0] == "hook_embed" and "hook_pos_embed" not in names
    assert names.index("blocks.0.mlp.hook_post") < names.index("blocks.1.attn.hook_pattern")
    assert {"blocks.1.ln2.hook_scale", "blocks.0.attn.hook_z", "ln_final.hook_normalized"} <= set(names)


def test_mean_ablating_the_embedding_changes_the_loss():
    module, data = tiny_task("bos_ints_mlp")
    batch = data.make_batch(Stream.PROBE, 0, 8)
    clean = task_loss(module.model, module, batch)
    losses = hook_mean_ablation_losses(module.model, module, batch)
    assert losses["hook_embed"] != pytest.approx(clean, rel=1e-3)
    # Replacing the logits by their batch mean is the uniform-over-batch prediction: computable by hand.
    logits = module.model(batch)
    assert losses["unembed.hook_out"] == pytest.approx(
        module.loss(logits.mean(0, keepdim=True).expand_as(logits), batch).item(), rel=1e-5
    )


@pytest.mark.parametrize("task", ["bos_ints_mlp", "affine_recurrence"])
def test_resuming_from_the_clean_cache_gives_the_same_losses(task):
    module, data = tiny_task(task)
    batch = data.make_batch(Stream.PROBE, 0, 8)
    _, cache = module.model.run_with_cache(module.model_input(batch))
    for mode in ("zero", "mean"):
        torch.testing.assert_close(
            head_ablation_losses(module.model, module, batch, mode, cache),
            head_ablation_losses(module.model, module, batch, mode),
        )
    resumed, full = (
        hook_mean_ablation_losses(module.model, module, batch, cache),
        hook_mean_ablation_losses(module.model, module, batch),
    )
    assert list(resumed) == list(full)
    assert all(resumed[name] == pytest.approx(full[name], rel=1e-5, abs=1e-6) for name in full)


def test_each_hook_resumes_at_the_block_it_fires_in():
    assert first_layer_reached("hook_embed", n_layers=2) is None
    assert first_layer_reached("blocks.0.hook_resid_pre", n_layers=2) == 0
    assert first_layer_reached("blocks.1.attn.hook_z", n_layers=2) == 1
    assert first_layer_reached("ln_final.hook_scale", n_layers=2) == 2
    assert first_layer_reached("unembed.hook_out", n_layers=2) == 2


def test_stacked_edits_each_see_only_their_own_clean_copy(monkeypatch):
    module, data = tiny_task("bos_ints_mlp")
    batch = data.make_batch(Stream.PROBE, 0, 4)
    edits = [
        ("hook_embed", lambda x: x * 0),
        ("blocks.0.hook_mlp_out", lambda x: x.mean(0, keepdim=True).expand_as(x)),
        ("hook_embed", lambda x: x * 2),
    ]
    one_by_one = [
        task_loss(module.model, module, batch, [(name, lambda x, hook, edit=edit: edit(x))]) for name, edit in edits
    ]
    monkeypatch.setattr(losses_module, "TOKENS_PER_PASS", {"cpu": 2**16})  # all copies in one pass, as on a GPU
    assert edited_losses(module.model, module, batch, edits) == pytest.approx(one_by_one, rel=1e-5)
    monkeypatch.setattr(losses_module, "TOKENS_PER_PASS", {"cpu": 2 * batch.numel()})  # two copies per pass
    assert edited_losses(module.model, module, batch, edits) == pytest.approx(one_by_one, rel=1e-5)
