"""The registry wrappers of the seed findings: what a snapshot stores equals the plain functions on the same inputs."""

from __future__ import annotations

import pytest
import torch

from lit_interp.analysis import run_analysis
from lit_interp.analysis.attention_positions import even_offset_attention
from lit_interp.analysis.circuits import full_qk_circuits
from lit_interp.analysis.interventions import kept_head_losses, qk_identity_losses
from lit_interp.analysis.logit_difference import best_incorrect, head_logit_difference_attribution, logit_difference
from lit_interp.analysis.patterns import attention_pattern
from lit_interp.analysis.qk_preferences import qk_diagonal_contrast
from lit_interp.analysis.recurrence import recurrence_parameters
from lit_interp.analysis.recurrence_inputs import C_GRID, loss_by_coefficient, loss_by_sequence_length
from lit_interp.analysis.weights import processed_copy
from lit_interp.tasks.base import Stream

from .conftest import tiny_task


@pytest.fixture(scope="module")
def recurrence_snapshot():
    torch.manual_seed(0)
    module, data = tiny_task("affine_recurrence")
    summary, tensors = run_analysis(module, data, step=0, probe_batch_size=16, hook_mean_ablation=False)
    return module, data, summary, tensors


def test_loss_by_c_splits_the_grid_at_the_training_bounds(recurrence_snapshot):
    module, data, summary, tensors = recurrence_snapshot
    losses, errors = loss_by_coefficient(module.model, module, data)
    torch.testing.assert_close(tensors["loss_by_c"], losses)
    torch.testing.assert_close(tensors["loss_by_c_standard_error"], errors)
    torch.testing.assert_close(tensors["c_grid"], C_GRID)
    inside = C_GRID.abs() <= 2
    assert summary["loss_by_c"]["inside_training_range"] == pytest.approx(losses[inside].mean().item(), rel=1e-5)
    assert summary["loss_by_c"]["outside_training_range"] == pytest.approx(losses[~inside].mean().item(), rel=1e-5)
    assert (summary["loss_by_c"]["training_c_low"], summary["loss_by_c"]["training_c_high"]) == (-2.0, 2.0)
    lengths = loss_by_sequence_length(module.model, module, data)
    assert summary["loss_by_seq_len"] == pytest.approx({str(length): loss for length, (loss, _) in lengths.items()})
    assert tensors["seq_len"].tolist() == list(lengths)
    assert tensors["loss_by_seq_len_standard_error"].tolist() == pytest.approx([error for _, error in lengths.values()])


def test_attention_split_by_the_sign_of_each_probe_sequence_s_c(recurrence_snapshot):
    module, data, summary, tensors = recurrence_snapshot
    batch = data.make_batch(Stream.PROBE, 0, 16)
    _, cache = module.model.run_with_cache(module.model_input(batch))
    patterns = torch.stack([attention_pattern(cache, layer) for layer in range(2)], dim=1)
    c = recurrence_parameters(batch, 1)[0][:, 0]
    negative = patterns[c < 0].mean(0)
    torch.testing.assert_close(tensors["attention_patterns_negative_c"], negative)
    torch.testing.assert_close(tensors["attention_patterns_positive_c"], patterns[c > 0].mean(0))
    expected = even_offset_attention(negative)[1, 0].item()
    assert summary["heads"]["L1H0"]["even_offset_attention_negative_c"] == pytest.approx(expected, rel=1e-5)


def test_weight_edits_read_the_processed_copy(recurrence_snapshot):
    module, data, summary, tensors = recurrence_snapshot
    batch = data.make_batch(Stream.PROBE, 0, 16)
    processed = processed_copy(module.model, center_unembed=False)
    kept = kept_head_losses(processed, module, batch, layers=[0])
    assert summary["heads"]["L0H1"]["kept_alone_loss"] == pytest.approx(kept[0, 1].item(), rel=1e-5)
    by_head, by_layer = qk_identity_losses(processed, module, batch, head_layers=[1])
    assert summary["heads"]["L1H0"]["qk_identity_loss"] == pytest.approx(by_head[0, 0].item(), rel=1e-5)
    assert summary["layers"]["0"]["layer_qk_identity_loss"] == pytest.approx(by_layer[0].item(), rel=1e-5)
    assert "qk_identity_loss" not in summary["heads"]["L0H0"] and "kept_alone_loss" not in summary["heads"]["L1H0"]


def test_the_qk_diagonal_of_a_bos_task_leaves_bos_out_and_reads_the_processed_circuit():
    module, data = tiny_task("bos_ints_mlp")  # LayerNorm: the processed circuit differs from the raw one
    summary, _ = run_analysis(module, data, step=0, probe_batch_size=8, hook_mean_ablation=False, expensive=False)
    processed = processed_copy(module.model, center_unembed=True)
    scale = torch.tensor([block.attn.attn_scale for block in processed.blocks])
    expected = qk_diagonal_contrast(full_qk_circuits(processed), scale, excluded_tokens=[data.bos_token])
    assert summary["heads"]["L1H0"]["qk_diagonal_contrast"] == pytest.approx(expected[1, 0].item(), rel=1e-5)
    with_bos = qk_diagonal_contrast(full_qk_circuits(processed), scale)
    assert with_bos[1, 0].item() != pytest.approx(expected[1, 0].item(), rel=1e-3)


def test_the_logit_difference_attribution_of_a_snapshot_uses_the_processed_unembedding():
    module, data = tiny_task("bos_ints_mlp")
    with torch.no_grad():
        module.model.ln_final.w.copy_(torch.rand(16) * 3 + 0.2)  # only the processed W_U carries it
    summary, _ = run_analysis(module, data, step=0, probe_batch_size=8, hook_mean_ablation=False, expensive=False)
    batch = data.make_batch(Stream.PROBE, 0, 8)
    logits, cache = module.model.run_with_cache(batch)
    targets = module.targets(batch)
    incorrect = best_incorrect(logits[:, 1:], targets)
    W_U = processed_copy(module.model, center_unembed=True).W_U
    attribution = head_logit_difference_attribution(cache, W_U, targets, incorrect, 1)
    assert summary["heads"]["L1H0"]["logit_difference_attribution"] == pytest.approx(attribution[1, 0].item(), rel=1e-5)
    clean = logit_difference(logits[:, 1:], targets).mean().item()
    assert summary["logit_difference"]["clean_logit_difference"] == pytest.approx(clean, rel=1e-5)
