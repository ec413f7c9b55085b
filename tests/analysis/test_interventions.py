"""Weight edits: applied to copies only, zeroing a head equals zeroing its hook_z, the QK edit is a projection."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lit_interp.analysis.ablation import head_ablation_losses
from lit_interp.analysis.interventions import (
    LowRankIdentityQK,
    ZeroHeadOutput,
    edited_copy,
    edited_losses,
    kept_head_losses,
    qk_identity_losses,
)
from lit_interp.errors import ConfigError
from lit_interp.tasks.affine_recurrence import AffineRecurrenceDataModule, AffineRecurrenceModule
from lit_interp.tasks.base import Stream

from .conftest import tiny_task


def recurrence():
    module, data = tiny_task("affine_recurrence")
    return module, data.make_batch(Stream.PROBE, 0, 8)


def test_zeroing_w_v_and_w_o_is_zeroing_the_head_s_output_and_leaves_the_model_alone():
    module, batch = recurrence()
    with torch.no_grad():
        module.model.blocks[1].attn.b_V.normal_()  # with W_V alone zeroed, b_V would still pass through W_O
    weights = {name: tensor.clone() for name, tensor in module.model.state_dict().items()}
    losses = edited_losses(module.model, module, batch, {f"L1H{h}": [ZeroHeadOutput(1, h)] for h in range(2)})
    zeroed = head_ablation_losses(module.model, module, batch, "zero")
    assert list(losses.values()) == pytest.approx(zeroed[1].tolist(), rel=1e-5)
    assert all(torch.equal(tensor, weights[name]) for name, tensor in module.model.state_dict().items())


def test_keeping_a_head_alone_next_to_a_silent_head_changes_nothing():
    module, batch = recurrence()
    model = edited_copy(module.model, [ZeroHeadOutput(0, 1)])  # L0H1 already writes nothing
    clean = module.loss(model(module.model_input(batch)), batch).item()
    kept = kept_head_losses(model, module, batch)
    assert kept[0, 0].item() == pytest.approx(clean, rel=1e-5)  # zeroing the silent L0H1 again
    zeroed = head_ablation_losses(model, module, batch, "zero")
    assert kept[0, 1].item() == pytest.approx(zeroed[0, 0].item(), rel=1e-5)  # L0H1 alone: L0H0 zeroed
    assert kept[0, 1].item() != pytest.approx(clean, rel=1e-3)


def test_the_low_rank_identity_qk_is_the_projection_onto_the_new_queries():
    module, _ = recurrence()
    model = edited_copy(module.model, [LowRankIdentityQK(1, 0)])
    W_Q, QK = model.blocks[1].attn.W_Q[0], model.QK[1, 0].AB
    d_head = module.model.cfg.d_head
    torch.testing.assert_close(QK @ QK, QK, atol=1e-5, rtol=0)  # a projection
    torch.testing.assert_close(QK, QK.T, atol=1e-5, rtol=0)  # orthogonal
    torch.testing.assert_close(QK @ W_Q, W_Q, atol=1e-5, rtol=0)  # onto W_Q's columns
    assert torch.trace(QK).item() == pytest.approx(d_head, abs=1e-4)  # of rank d_head
    assert W_Q.min() >= 0 and W_Q.max() < 1  # seed 002's torch.rand
    other = edited_copy(module.model, [LowRankIdentityQK(1, 1)]).blocks[1].attn.W_Q[1]
    assert not torch.equal(W_Q, other)  # heads get their own subspaces
    assert torch.equal(model.blocks[1].attn.W_Q[1], module.model.blocks[1].attn.W_Q[1])  # one head edited


def test_qk_identity_losses_per_head_and_per_layer():
    module, batch = recurrence()
    by_head, by_layer = qk_identity_losses(module.model, module, batch)
    assert by_head.shape == (2, 2) and by_layer.shape == (2,)
    one = edited_copy(module.model, [LowRankIdentityQK(0, 1)])
    assert by_head[0, 1].item() == pytest.approx(module.loss(one(module.model_input(batch)), batch).item(), rel=1e-5)
    both = edited_copy(module.model, [LowRankIdentityQK(1, head) for head in range(2)])
    assert by_layer[1].item() == pytest.approx(module.loss(both(module.model_input(batch)), batch).item(), rel=1e-5)
    mixed = [ZeroHeadOutput(1, 0), LowRankIdentityQK(0, 1)]  # from block 0 on, though the first edit is in block 1
    full = edited_copy(module.model, mixed)
    expected = module.loss(full(module.model_input(batch)), batch).item()
    assert edited_losses(module.model, module, batch, {"mixed": mixed})["mixed"] == pytest.approx(expected, rel=1e-5)
    last, _ = qk_identity_losses(module.model, module, batch, head_layers=[1])
    torch.testing.assert_close(last, by_head[1:])
    assert kept_head_losses(module.model, module, batch, layers=[1]).shape == (1, 2)


def test_edits_are_applied_to_a_copy_only():
    module, batch = recurrence()
    edited = []

    class Spy:
        layer, head = 0, 0

        def apply(self, model):
            edited.append(model)

    edited_losses(module.model, module, batch, {"spy": [Spy()]})
    edited_copy(module.model, [Spy()])
    assert len(edited) == 2 and all(model is not module.model for model in edited)


def test_an_edit_of_a_head_the_model_lacks_names_it():
    module, batch = recurrence()
    with pytest.raises(ConfigError, match="head=5 is outside the model's heads 0..1"):
        edited_copy(module.model, [ZeroHeadOutput(0, 5)])
    with pytest.raises(ConfigError, match="layer=2 is outside"):
        edited_losses(module.model, module, batch, {"bad": [LowRankIdentityQK(2, 0)]})


def test_edits_in_place_give_the_same_losses_and_restore_every_weight():
    module, batch = recurrence()
    model = edited_copy(module.model, [])
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    copied, _ = qk_identity_losses(model, module, batch)
    in_place, _ = qk_identity_losses(model, module, batch, in_place=True)
    torch.testing.assert_close(in_place, copied, rtol=0, atol=0)
    assert all(torch.equal(tensor, weights[name]) for name, tensor in model.state_dict().items())


def test_with_one_head_per_layer_the_layer_edit_is_the_head_edit():
    module, data = tiny_task("bos_ints_attn_only")
    batch = data.make_batch(Stream.PROBE, 0, 8)
    by_head, by_layer = qk_identity_losses(module.model, module, batch)
    torch.testing.assert_close(by_layer, by_head[:, 0])
    full = edited_copy(module.model, [LowRankIdentityQK(1, 0)])
    assert by_layer[1].item() == pytest.approx(module.loss(full(batch), batch).item(), rel=1e-5)


def test_the_documented_example_runs_on_a_model_of_seed_002_s_shape():
    docs = (Path(__file__).parents[2] / "docs" / "analysis.md").read_text()
    section = docs.split("## Editing weights and reading single predictions")[1]
    code = section.split("```python\n")[1].split("```")[0]
    module = AffineRecurrenceModule(n_layers=3, n_heads=8, d_model=16, d_head=4, d_mlp=32)
    data = AffineRecurrenceDataModule()
    run = SimpleNamespace(model=module.model, module=module, probe_batch=lambda: data.make_batch(Stream.PROBE, 0, 8))
    namespace = {"run": run}
    exec(compile(code.replace("edited_losses(", "losses = edited_losses(", 1), "docs/analysis.md", "exec"), namespace)
    assert set(namespace["losses"]) == {"L0H7 alone", "L2H0-4 QK identity"}
