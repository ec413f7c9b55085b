"""Single examples: top-k predictions of a hand-built previous-token model, attention with a layer mean-ablated."""

from __future__ import annotations

import pytest
import torch

from lit_interp.analysis import run_analysis
from lit_interp.analysis.ablation import hook_mean_ablation_losses
from lit_interp.analysis.examples import (
    attention_with_layer_mean_ablated,
    targets_by_position,
    top_k_from_logits,
    top_k_predictions,
)
from lit_interp.analysis.patterns import attention_pattern
from lit_interp.tasks.base import Stream
from lit_interp.tasks.prev_token_digits import PrevTokenDigitsModule

from .conftest import tiny_task
from .hand_built import previous_token_copier


def test_top_k_ranks_the_target_and_leaves_positions_without_one_out():
    logits = torch.tensor([[[0.0, 3.0, 1.0, 2.0], [5.0, 4.0, 3.0, 2.0]]])
    top = top_k_from_logits(logits, k=2, targets=torch.tensor([[3, -1]]))
    assert top.tokens.tolist() == [[[1, 3], [0, 1]]]
    assert top.logits.tolist() == [[[3.0, 2.0], [5.0, 4.0]]]
    torch.testing.assert_close(top.probs, logits.softmax(-1).topk(2).values)
    assert top.target_rank[0, 0].item() == 1 and torch.isnan(top.target_rank[0, 1])
    assert top.target_logit[0, 0].item() == 2.0
    assert top.target_prob[0, 0].item() == pytest.approx(logits.softmax(-1)[0, 0, 3].item())
    assert top_k_from_logits(logits, k=9).tokens.shape == (1, 2, 4)  # k capped at d_vocab


def test_a_previous_token_model_ranks_the_previous_token_first_and_formats_like_test_prompt():
    tokens = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3])
    task = PrevTokenDigitsModule(d_model=16)
    targets = targets_by_position(task, tokens[None])
    assert targets[0].tolist() == [-1, *tokens[:-1].tolist()]
    top = top_k_predictions(previous_token_copier(), tokens, k=3, targets=targets[0])
    assert top.tokens[0, 1:, 0].tolist() == tokens[:-1].tolist()
    assert top.target_rank[0, 1:].tolist() == [0.0] * 9 and top.probs[0, 1:, 0].min() > 0.99
    text = top.format(0, tokens[None])
    assert "pos 2 (input 4): target rank 0" in text and "  top 0: 1  logit 10.00" in text


def test_attention_with_a_layer_mean_ablated_changes_only_later_layers_and_matches_the_hook_sweep():
    module, data = tiny_task("bos_ints_mlp")
    batch = data.make_batch(Stream.PROBE, 0, 8)
    _, cache = module.model.run_with_cache(batch)
    loss, patterns = attention_with_layer_mean_ablated(module.model, module, batch, layer=0)
    assert patterns.shape == (8, 2, 1, 12, 12)
    torch.testing.assert_close(patterns[:, 0], attention_pattern(cache, 0))  # layer 0 reads nothing ablated
    assert not torch.allclose(patterns[:, 1], attention_pattern(cache, 1), atol=1e-4)
    sweep = hook_mean_ablation_losses(module.model, module, batch)
    assert loss == pytest.approx(sweep["blocks.0.attn.hook_z"], rel=1e-5)


def test_snapshot_keeps_one_sequence_s_neurons_and_the_examples_predictions():
    module, data = tiny_task("affine_recurrence")
    _, tensors = run_analysis(module, data, step=0, probe_batch_size=8, hook_mean_ablation=False, expensive=False)
    batch = data.make_batch(Stream.PROBE, 0, 8)
    output, cache = module.model.run_with_cache(module.model_input(batch))
    torch.testing.assert_close(tensors["example_neuron_activations"][1], cache["post", 1][0])
    torch.testing.assert_close(tensors["example_predictions"], output[:, 2:])
    torch.testing.assert_close(tensors["example_targets"], batch[:, 3:])
