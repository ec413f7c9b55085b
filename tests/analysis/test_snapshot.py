"""run_analysis: the summary schema per task, tensors ready for safetensors, and training left untouched."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lit_interp.analysis import run_analysis

from .conftest import TASKS, tiny_task

COMMON_HEAD_KEYS = {
    "prev_token_score", "duplicate_score", "induction_score", "zero_ablation_loss", "mean_ablation_loss",
    "ov_eigen_score", "qk_eigen_score", "direct_attribution",
}
# What each config's architecture and task make applicable, beyond the keys every snapshot has.
EXPECTED = {
    "prev_token_digits": dict(metric="acc", heads={"ov_copying_score", "rotary_q_similarity"}, sections={"adversarial"},
                              adversarial={"clean_loss", "repeated_tokens_loss"}, tensors={"rotary_similarity.q.L0H0", "rotary_similarity.q_vs_k.L0H0"}),
    "bos_ints_attn_only": dict(metric="acc", heads={"ov_copying_score", "bos_score"}, sections={"adversarial", "composition", "term_importance"},
                               adversarial={"clean_loss", "repeated_tokens_loss", "no_bos_loss"}, tensors={"attn_score_terms.kq_comp.L1H0"}),
    "bos_ints_mlp": dict(metric="acc", heads={"ov_copying_score", "bos_score"}, sections={"adversarial", "composition"},
                         adversarial={"clean_loss", "repeated_tokens_loss", "no_bos_loss"}, tensors=set()),
    "affine_recurrence": dict(metric="r2", heads=set(), sections={"composition"}, tensors=set()),
}
ALWAYS_TENSORS = {"attention_patterns", "repeated_sequence_patterns", "head_zero_ablation_loss", "head_mean_ablation_loss",
                  "direct_attribution_by_position", "ov_circuit.L0H0"}


@pytest.mark.parametrize("task", TASKS)
def test_summary_holds_exactly_the_keys_that_apply(task):
    module, data = tiny_task(task)
    summary, tensors = run_analysis(module, data, step=7, probe_batch_size=8)
    expected = EXPECTED[task]
    assert set(summary) == {"step", "task", "loss", "metrics", "heads", "hooks"} | expected["sections"]
    assert summary["step"] == 7 and summary["task"] == type(module).__name__
    assert set(summary["metrics"]) == {expected["metric"]}
    labels = module.model.all_head_labels()
    assert list(summary["heads"]) == labels
    assert all(set(scores) == COMMON_HEAD_KEYS | expected["heads"] for scores in summary["heads"].values())
    assert all(set(entry) == {"mean_ablation_loss"} for entry in summary["hooks"].values())
    if "adversarial" in expected["sections"]:
        assert set(summary["adversarial"]) == expected["adversarial"]
        assert summary["adversarial"]["clean_loss"] == pytest.approx(summary["loss"])
    if "composition" in expected["sections"]:
        assert summary["composition"]["labels"] == labels
        assert all(len(summary["composition"][mode]) == len(labels) for mode in "qkv")
    if "term_importance" in expected["sections"]:
        assert set(summary["term_importance"]) == {"layer", "direct", "k_comp", "q_comp", "kq_comp"}
    assert ALWAYS_TENSORS | expected["tensors"] <= set(tensors)
    json.dumps(summary, allow_nan=False)


@pytest.mark.parametrize("task", ["prev_token_digits", "bos_ints_attn_only", "affine_recurrence"])
def test_tensors_are_cpu_contiguous_fp32_and_round_trip_through_safetensors(task, tmp_path):
    module, data = tiny_task(task)
    _, tensors = run_analysis(module, data, step=0, probe_batch_size=8, sweep_hooks=False)
    assert all(t.device.type == "cpu" and t.is_contiguous() and t.dtype == torch.float32 for t in tensors.values())
    save_file(tensors, tmp_path / "tensors.safetensors")
    loaded = load_file(tmp_path / "tensors.safetensors")
    assert all(torch.equal(loaded[name], tensor) for name, tensor in tensors.items())
    cfg = module.model.cfg
    assert tensors["attention_patterns"].shape == (cfg.n_layers, cfg.n_heads, cfg.n_ctx, cfg.n_ctx)
    assert tensors["head_zero_ablation_loss"].shape == (cfg.n_layers, cfg.n_heads)
    assert tensors[f"ov_circuit.L{cfg.n_layers - 1}H{cfg.n_heads - 1}"].shape == (cfg.d_vocab, cfg.d_vocab)
    assert all(tensor.ndim == 2 for name, tensor in tensors.items() if "." in name)  # per-head matrices


def test_sweep_hooks_false_leaves_out_the_sweep_only():
    module, data = tiny_task("bos_ints_mlp")
    full, _ = run_analysis(module, data, step=0, probe_batch_size=8)
    cheap, _ = run_analysis(module, data, step=0, probe_batch_size=8, sweep_hooks=False)
    assert "hooks" in full and "hooks" not in cheap
    assert {key: value for key, value in full.items() if key != "hooks"} == cheap  # also: same probe, same numbers
    assert full["hooks"]["hook_embed"]["mean_ablation_loss"] != pytest.approx(full["loss"], rel=1e-3)


def test_probe_index_picks_another_batch():
    module, data = tiny_task("bos_ints_attn_only")
    first, _ = run_analysis(module, data, step=0, probe_batch_size=8, sweep_hooks=False)
    second, _ = run_analysis(module, data, step=0, probe_batch_size=8, probe_index=1, sweep_hooks=False)
    assert first["loss"] != second["loss"]


@pytest.mark.parametrize("task", ["bos_ints_attn_only", "affine_recurrence"])
def test_analysis_leaves_weights_modes_grads_and_global_rng_untouched(task):
    module, data = tiny_task(task)
    module.train()
    module.model.blocks[0].eval()  # a mixed state must come back as it was, not as all-train
    module.model(module.model_input(data.make_batch(0, 0, 2))).float().sum().backward()
    weights = {name: tensor.clone() for name, tensor in module.state_dict().items()}
    grads = {name: parameter.grad.clone() for name, parameter in module.named_parameters() if parameter.grad is not None}
    modes = {name: submodule.training for name, submodule in module.named_modules()}
    rng = torch.get_rng_state()

    run_analysis(module, data, step=0, probe_batch_size=8)

    assert torch.equal(torch.get_rng_state(), rng)
    assert {name: submodule.training for name, submodule in module.named_modules()} == modes
    assert all(torch.equal(tensor, weights[name]) for name, tensor in module.state_dict().items())
    assert all(torch.equal(parameter.grad, grads[name]) for name, parameter in module.named_parameters() if name in grads)
    assert torch.is_grad_enabled()
    assert all(not hook_point.fwd_hooks for hook_point in module.model.hook_dict.values())


def test_bf16_weights_are_analysed_in_fp32_without_being_cast():
    module, data = tiny_task("bos_ints_attn_only")
    reference, _ = run_analysis(module, data, step=0, probe_batch_size=8, sweep_hooks=False)
    module.to(torch.bfloat16)
    weights = {name: tensor.clone() for name, tensor in module.state_dict().items()}
    summary, tensors = run_analysis(module, data, step=0, probe_batch_size=8, sweep_hooks=False)
    assert all(torch.equal(tensor, weights[name]) and tensor.dtype == weights[name].dtype for name, tensor in module.state_dict().items())
    assert module.model.W_E.dtype == torch.bfloat16
    assert all(tensor.dtype == torch.float32 for tensor in tensors.values())
    assert summary["loss"] == pytest.approx(reference["loss"], rel=0.05)  # only the bf16 rounding of the weights differs
