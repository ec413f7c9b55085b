"""run_analysis: the summary schema per task, tensors ready for safetensors, and training left untouched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lit_interp.analysis import run_analysis
from lit_interp.analysis.induction import MIN_PREFIX_MATCHING_QUERIES, prefix_matching_queries
from lit_interp.analysis.weights import processed_copy, processed_view
from lit_interp.tasks.base import Stream

from .conftest import TASKS, tiny_task

COMMON_HEAD_KEYS = {
    "prev_token_score",
    "attention_entropy",
    "duplicate_score",
    "induction_score",
    "ov_eigen_score",
    "ov_residual_eigen_score",
    "qk_eigen_score",
    "ov_effective_rank",
    "qk_effective_rank",
    "direct_attribution",
}
EXPENSIVE_HEAD_KEYS = {"patching_score", "backup_attribution_change", "zero_ablation_loss", "mean_ablation_loss"}
# Token tasks' seed-003 logit difference: cheap attribution, expensive patching and backup.
LOGIT_DIFFERENCE = dict(
    heads={"qk_diagonal_contrast", "logit_difference_attribution", "logit_difference_share"},
    expensive_heads={"logit_difference_patching_score", "backup_logit_difference_change"},
    expensive_sections={"logit_difference_patching", "backup_logit_difference"},
    expensive_tensors={
        "resid_pre_patching_logit_difference",
        "head_patching_logit_difference",
        "backup_logit_difference_change",
    },
    tensors={"example_top_k_tokens", "example_top_k_probs", "example_target_rank"},
)
UNDER_ABLATION = {"attention_patterns_layer_0_mean_ablated", "example_attention_patterns_layer_0_mean_ablated"}
# What each config's architecture and task make applicable, beyond the keys every snapshot has.
EXPECTED = {
    "prev_token_digits": dict(
        metric="acc",
        heads={"ov_copying_score", "rotary_q_similarity", "rotary_qk_offset", "rotary_k_similarity"}
        | {"fixed_position_attention", "fixed_position"}
        | LOGIT_DIFFERENCE["heads"],
        expensive_heads={"logit_difference_patching_score"},  # one head: no backup
        sections={"adversarial", "logit_difference"},
        expensive_sections={"logit_difference_patching"},
        layers={"logit_lens_acc"},
        expensive_layers={"layer_qk_identity_loss"},
        adversarial={"clean_loss", "repeated_tokens_loss"},
        tensors={"rotary_similarity.q.L0H0", "rotary_similarity.q_vs_k.L0H0", "example_inputs"}
        | {"rotary_qk_offset_scores", "attention_by_key_position"}
        | LOGIT_DIFFERENCE["tensors"],
        expensive_tensors=LOGIT_DIFFERENCE["expensive_tensors"] - {"backup_logit_difference_change"},
    ),
    "bos_ints_attn_only": dict(
        metric="acc",
        heads={"ov_copying_score", "bos_score", "bos_attention_trend"} | LOGIT_DIFFERENCE["heads"],
        last_layer_heads={"kq_recency"},
        expensive_heads=LOGIT_DIFFERENCE["expensive_heads"],
        sections={"adversarial", "composition", "term_importance", "logit_difference", "induction_circuit"},
        expensive_sections=LOGIT_DIFFERENCE["expensive_sections"] | {"attention_under_ablation"},
        layers={"logit_lens_acc"},
        expensive_layers={"layer_qk_identity_loss"},
        adversarial={"clean_loss", "repeated_tokens_loss", "no_bos_loss"},
        tensors={
            "attn_score_terms.kq_comp.L1H0",
            "kq_composition_circuit_from_L0H0.L1H0",
            "example_inputs",
            "adversarial_attention_patterns_no_bos",
            "bos_attention_by_query_pos",
        }
        | LOGIT_DIFFERENCE["tensors"],
        expensive_tensors=LOGIT_DIFFERENCE["expensive_tensors"] | UNDER_ABLATION,
    ),
    "bos_ints_mlp": dict(
        metric="acc",
        heads={"ov_copying_score", "bos_score", "bos_attention_trend"} | LOGIT_DIFFERENCE["heads"],
        expensive_heads=LOGIT_DIFFERENCE["expensive_heads"],
        sections={"adversarial", "composition", "logit_difference", "induction_circuit"},
        expensive_sections=LOGIT_DIFFERENCE["expensive_sections"] | {"attention_under_ablation"},
        layers={"logit_lens_acc", "mlp_direct_attribution", "dead_neuron_fraction"},
        expensive_layers={"layer_qk_identity_loss"},
        adversarial={"clean_loss", "repeated_tokens_loss", "no_bos_loss"},
        tensors={
            "neuron_firing_frequency",
            "neuron_mean_activation_by_position",
            "ov_neuron_circuit.L1H0",
            "example_inputs",
            "example_neuron_activations",
            "bos_attention_by_query_pos",
        }
        | LOGIT_DIFFERENCE["tensors"],
        expensive_tensors=LOGIT_DIFFERENCE["expensive_tensors"] | UNDER_ABLATION,
    ),
    "affine_recurrence": dict(
        metric="r2",
        heads={"fixed_position_attention", "fixed_position", "ov_large_entry_fraction"}
        | {"even_offset_attention_negative_c", "even_offset_attention_positive_c"},
        expensive_heads=set(),
        first_layer_heads={"kept_alone_loss"},
        sections={"composition", "recurrence"},
        expensive_sections={"attention_under_ablation", "loss_by_c", "loss_by_seq_len", "probes"},
        layers={
            "mlp_direct_attribution",
            "dead_neuron_fraction",
            "attn_out_outside_embedding_fraction",
            "mlp_out_outside_embedding_fraction",
            "block_out_outside_embedding_ratio",
            "summed_ov_slope",
            "summed_ov_r2",
            "summed_ov_slope_random",
            "summed_ov_r2_random",
        },
        expensive_layers={"probe_c_r2", "probe_c_shuffled_r2", "probe_d_r2", "probe_d_shuffled_r2"}
        | {"layer_qk_identity_loss"},
        tensors={"neuron_firing_frequency", "positional_qk_circuit.L1H1", "example_neuron_activations"}
        | {"example_predictions", "example_targets", "attention_by_key_position"}
        | {"attention_patterns_negative_c", "attention_patterns_positive_c"},
        expensive_tensors={"c_grid", "loss_by_c", "loss_by_c_standard_error", "seq_len", "loss_by_seq_len"}
        | {"loss_by_seq_len_standard_error"}
        | UNDER_ABLATION
        | {f"{kind}_matrix.L{layer}H{head}" for kind in ("ov", "qk") for layer in range(2) for head in range(2)},
    ),
    "modular_addition": dict(
        metric="acc",
        heads={"ov_copying_score", "fixed_position_attention", "fixed_position"} | LOGIT_DIFFERENCE["heads"],
        expensive_heads=LOGIT_DIFFERENCE["expensive_heads"],
        first_layer_heads={"kept_alone_loss"},
        absent_heads={"duplicate_score", "induction_score"},  # [a, b, =] cannot hold a repeated segment
        absent_tensors={"repeated_sequence_patterns"},
        sections={"fourier", "progress_measures", "logit_difference"},
        expensive_sections=LOGIT_DIFFERENCE["expensive_sections"],
        layers={"logit_lens_acc", "mlp_direct_attribution", "dead_neuron_fraction"},
        expensive_layers={"layer_qk_identity_loss"},
        expensive_tensors=LOGIT_DIFFERENCE["expensive_tensors"],
        tensors=LOGIT_DIFFERENCE["tensors"]
        | {"attention_by_key_position", "example_neuron_activations"}
        | {
            "example_inputs",
            "positional_qk_circuit.L0H1",
            "ov_neuron_circuit.L0H1",
            "embed_fourier_norms",
            "neuron_logit_fourier_norms",
            "neuron_fourier_norms",
            "neuron_frequency",
            "neuron_frequency_fraction",
            "logit_sum_coefficients",
            "logit_mean",
            "train_logits",
            "train_pairs",
        },
    ),
    "induction": dict(
        metric="acc",
        heads={"ov_copying_score", "bos_score", "bos_attention_trend"} | LOGIT_DIFFERENCE["heads"],
        last_layer_heads={"kq_recency"},
        expensive_heads=LOGIT_DIFFERENCE["expensive_heads"],
        sections={"adversarial", "composition", "term_importance", "in_context", "induction_circuit"}
        | {"logit_difference"},
        expensive_sections=LOGIT_DIFFERENCE["expensive_sections"] | {"attention_under_ablation"},
        layers={"logit_lens_acc"},
        expensive_layers={"layer_qk_identity_loss"},
        adversarial={"clean_loss", "repeated_tokens_loss", "no_bos_loss"},
        first_layer_heads={"kept_alone_loss"},
        tensors={"kq_composition_circuit_from_L0H1.L1H0", "positional_qk_circuit.L1H1", "example_inputs"}
        | {"bos_attention_by_query_pos"}
        | LOGIT_DIFFERENCE["tensors"],
        expensive_tensors=LOGIT_DIFFERENCE["expensive_tensors"] | UNDER_ABLATION,
    ),
}
ALWAYS_TENSORS = {
    "attention_patterns",
    "attention_scores",
    "example_attention_patterns",
    "repeated_sequence_patterns",
    "direct_attribution_by_position",
    "component_direct_attribution",
    "ov_circuit.L0H0",
    "qk_circuit.L0H0",
    "ov_singular_values",
    "qk_singular_values",
}
PATCHING_TENSORS = {"resid_pre_patching", "head_patching"}  # expensive, and absent when patching is refused
EXPENSIVE_TENSORS = {
    "backup_attribution_change",
    "head_zero_ablation_loss",
    "head_mean_ablation_loss",
}
COMMON_LAYER_KEYS = {"attn_direct_attribution", "logit_lens_loss"}
INDUCTION_CIRCUIT_KEYS = {
    "induction_layer",
    "induction_head",
    "induction_score",
    "previous_token_layer",
    "previous_token_head",
    "prev_token_score",
    "k_composition",
    "random_k_composition",
}


def prefix_matching_applies(module, data, probe_batch_size: int) -> bool:
    """Token probe batches with enough repeated tokens get prefix-matching scores (few repeats: none)."""
    batch = data.make_batch(Stream.PROBE, 0, probe_batch_size)
    if batch.is_floating_point():
        return False
    return int(prefix_matching_queries(module.model_input(batch)).sum()) >= MIN_PREFIX_MATCHING_QUERIES


def same(first: dict, second: dict) -> bool:
    """Equal summaries, NaN equal to NaN (a score refused on this input is NaN in both)."""
    return json.dumps(first, sort_keys=True, allow_nan=True) == json.dumps(second, sort_keys=True, allow_nan=True)


@pytest.mark.parametrize("task", TASKS)
def test_summary_holds_exactly_the_keys_that_apply(task):
    module, data = tiny_task(task)
    summary, tensors = run_analysis(module, data, step=7, probe_batch_size=8)
    expected = dict(EXPECTED[task])
    if prefix_matching_applies(module, data, 8):
        expected["heads"] = expected["heads"] | {"prefix_matching_score"}
        expected["sections"] = expected["sections"] | {"prefix_matching"}
    common = {"step", "task", "loss", "metrics", "heads", "hooks", "layers", "direct_attribution", "patching", "backup"}
    assert set(summary) == common | expected["sections"] | expected.get("expensive_sections", set())
    assert summary["step"] == 7 and summary["task"] == type(module).__name__
    assert set(summary["metrics"]) == {expected["metric"]}
    labels = module.model.all_head_labels()
    assert list(summary["heads"]) == labels
    n_layers = module.model.cfg.n_layers
    for label, scores in summary["heads"].items():
        extra = {"qk_identity_loss"} if label.startswith(f"L{n_layers - 1}H") else set()  # weight edits, as seed 002
        extra |= expected.get("last_layer_heads", set()) if label.startswith(f"L{n_layers - 1}H") else set()
        extra |= expected.get("first_layer_heads", set()) if label.startswith("L0H") else set()
        absent = expected.get("absent_heads", set())
        assert (
            set(scores)
            == (
                COMMON_HEAD_KEYS
                | EXPENSIVE_HEAD_KEYS
                | expected["heads"]
                | expected.get("expensive_heads", set())
                | extra
            )
            - absent
        )
    layer_keys = COMMON_LAYER_KEYS | expected["layers"] | expected.get("expensive_layers", set())
    assert list(summary["layers"]) == [
        str(layer) for layer in range(n_layers + 1)
    ]  # n_layers: the final residual stream
    assert all(set(summary["layers"][str(layer)]) == layer_keys for layer in range(n_layers))
    assert all(set(entry) == {"mean_ablation_loss"} for entry in summary["hooks"].values())
    if "adversarial" in expected["sections"]:
        assert set(summary["adversarial"]) == expected["adversarial"]
        assert summary["adversarial"]["clean_loss"] == pytest.approx(summary["loss"])
    if "composition" in expected["sections"]:
        assert summary["composition"]["labels"] == labels
        assert all(len(summary["composition"][mode]) == len(labels) for mode in "qkv")
    if "probes" in summary:  # their own set, not the probe batch
        assert summary["probes"] == {"sequences": 2048, "folds": 5, "features": module.model.cfg.d_model}
    assert {"clean_last_position_loss", "corrupted_last_position_loss", "loss_gap", "loss_noise"} <= set(
        summary["patching"]
    )
    if "term_importance" in expected["sections"]:
        assert set(summary["term_importance"]) == {"layer", "direct", "k_comp", "q_comp", "kq_comp"}
    if "in_context" in expected["sections"]:
        assert set(summary["in_context"]) == {"first_half_loss", "repeated_half_loss", "in_context_loss"}
    if "induction_circuit" in expected["sections"]:
        others = {"other_k_composition"} if module.model.cfg.n_heads > 1 else set()  # none beside a single head
        assert set(summary["induction_circuit"]) == INDUCTION_CIRCUIT_KEYS | others
    assert summary["layers"][str(n_layers)]["logit_lens_loss"] == pytest.approx(summary["loss"], rel=1e-5)
    always = ALWAYS_TENSORS - expected.get("absent_tensors", set())
    assert always | EXPENSIVE_TENSORS | expected["tensors"] | expected.get("expensive_tensors", set()) <= set(tensors)
    assert not expected.get("absent_tensors", set()) & set(tensors)
    assert (PATCHING_TENSORS <= set(tensors)) == ("reason" not in summary["patching"])
    assert PATCHING_TENSORS & set(tensors) in (set(), PATCHING_TENSORS)
    json.dumps(summary, allow_nan=True)


@pytest.mark.parametrize("task", ["bos_ints_attn_only", "affine_recurrence", "induction"])
def test_expensive_false_leaves_out_only_the_expensive_analyses(task):
    module, data = tiny_task(task)
    full, full_tensors = run_analysis(module, data, step=0, probe_batch_size=8, hook_mean_ablation=False)
    cheap, cheap_tensors = run_analysis(
        module, data, step=0, probe_batch_size=8, hook_mean_ablation=False, expensive=False
    )
    expected = EXPECTED[task]
    adversarial = "adversarial" in expected["sections"]
    expensive_sections = {"patching", "backup"} | expected.get("expensive_sections", set())
    assert set(full) - set(cheap) == expensive_sections | ({"adversarial"} if adversarial else set())
    adversarial_tensors = {name for name in full_tensors if name.startswith("adversarial_")}
    assert bool(adversarial_tensors) == adversarial
    patched = set() if "reason" in full["patching"] else PATCHING_TENSORS
    assert (
        set(full_tensors) - set(cheap_tensors)
        == EXPENSIVE_TENSORS | expected.get("expensive_tensors", set()) | adversarial_tensors | patched
    )
    expensive_heads = (
        EXPENSIVE_HEAD_KEYS | expected.get("expensive_heads", set()) | {"qk_identity_loss", "kept_alone_loss"}
    )
    for label, scores in cheap["heads"].items():
        assert same(
            {name: value for name, value in full["heads"][label].items() if name not in expensive_heads}, scores
        )
    expensive_layers = EXPECTED[task].get("expensive_layers", set())
    for layer, values in cheap["layers"].items():
        assert same(
            {name: value for name, value in full["layers"][layer].items() if name not in expensive_layers}, values
        )


@pytest.mark.parametrize("task", ["bos_ints_attn_only", "induction"])
def test_example_tensors_hold_the_first_probe_sequences_and_their_own_patterns(task):
    module, data = tiny_task(task)
    _, tensors = run_analysis(module, data, step=0, probe_batch_size=12, hook_mean_ablation=False, expensive=False)
    inputs = module.model_input(data.make_batch(Stream.PROBE, 0, 12)[:8])  # induction: one token fewer
    assert torch.equal(tensors["example_inputs"], inputs.float())
    _, cache = module.model.run_with_cache(inputs)
    torch.testing.assert_close(tensors["example_attention_patterns"][:, 1], cache["pattern", 1])
    cfg = module.model.cfg
    assert tensors["example_attention_patterns"].shape == (8, 2, cfg.n_heads, cfg.n_ctx, cfg.n_ctx)


NAN_SCRIPT = """
import math, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from analysis.conftest import TASKS, tiny_task
from lit_interp.analysis import run_analysis
from lit_interp.analysis.weights import processed_copy, processed_view
from lit_interp.analysis.circuits import composition_scores, eigenvalue_scores, head_singular_values
for task in TASKS:
    module, data = tiny_task(task)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.fill_(float("nan"))
    assert torch.isnan(eigenvalue_scores(module.model.OV)).all()
    assert torch.isnan(head_singular_values(module.model)["qk"]).all()
    summary, _ = run_analysis(module, data, step=1, probe_batch_size=8)
    keys = ("ov_eigen_score", "qk_eigen_score", "ov_effective_rank", "direct_attribution", "zero_ablation_loss",
            "prev_token_score", "attention_entropy")
    keys += () if task == "modular_addition" else ("induction_score",)  # [a, b, =] holds no repeat
    for key in keys:
        assert math.isnan(summary["heads"]["L0H0"][key]), (task, key)
    where_present = ("bos_attention_trend", "fixed_position_attention", "fixed_position", "qk_diagonal_contrast",
                     "rotary_qk_offset", "logit_difference_share", "ov_large_entry_fraction", "qk_identity_loss",
                     "kept_alone_loss", "even_offset_attention_negative_c", "logit_difference_patching_score")
    for key in where_present:
        value = summary["heads"]["L0H0"].get(key)
        assert value is None or math.isnan(value), (task, key)
    if "composition" in summary:
        assert math.isnan(summary["composition"]["q"][0][-1])
    if "fourier" in summary:
        assert math.isnan(summary["fourier"]["embed_gini"]) and math.isnan(summary["fourier"]["neuron_logit_gini"])
        assert summary["fourier"]["key_frequencies"] == []
        measures = summary["progress_measures"]
        assert all(math.isnan(value) for key, value in measures.items() if key != "sum_squared_weights"), measures
print("ok")
"""


def test_a_nan_model_gets_nan_scores_without_crashing(tmp_path):
    # A subprocess: before the finiteness guards, eigvals on a NaN matrix killed the interpreter (SIGSEGV).
    script = tmp_path / "nan_model.py"
    script.write_text(NAN_SCRIPT)
    tests_dir = str(Path(__file__).parents[1])
    result = subprocess.run([sys.executable, str(script), tests_dir], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


@pytest.mark.parametrize("task", ["prev_token_digits", "bos_ints_attn_only", "affine_recurrence"])
def test_tensors_are_cpu_contiguous_fp32_and_round_trip_through_safetensors(task, tmp_path):
    module, data = tiny_task(task)
    _, tensors = run_analysis(module, data, step=0, probe_batch_size=8, hook_mean_ablation=False)
    assert all(t.device.type == "cpu" and t.is_contiguous() and t.dtype == torch.float32 for t in tensors.values())
    save_file(tensors, tmp_path / "tensors.safetensors")
    loaded = load_file(tmp_path / "tensors.safetensors")
    for name, tensor in tensors.items():  # NaN marks what cannot be measured (e.g. a position without a target)
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0, equal_nan=True)
    cfg = module.model.cfg
    assert tensors["attention_patterns"].shape == (cfg.n_layers, cfg.n_heads, cfg.n_ctx, cfg.n_ctx)
    assert tensors["head_zero_ablation_loss"].shape == (cfg.n_layers, cfg.n_heads)
    assert tensors[f"ov_circuit.L{cfg.n_layers - 1}H{cfg.n_heads - 1}"].shape == (cfg.d_vocab, cfg.d_vocab)
    assert all(tensor.ndim == 2 for name, tensor in tensors.items() if "." in name)  # per-head matrices


def test_hook_mean_ablation_false_leaves_out_the_sweep_only():
    module, data = tiny_task("bos_ints_mlp")
    full, _ = run_analysis(module, data, step=0, probe_batch_size=8)
    cheap, _ = run_analysis(module, data, step=0, probe_batch_size=8, hook_mean_ablation=False)
    assert "hooks" in full and "hooks" not in cheap
    assert same({key: value for key, value in full.items() if key != "hooks"}, cheap)  # also: same probe, same numbers
    assert full["hooks"]["hook_embed"]["mean_ablation_loss"] != pytest.approx(full["loss"], rel=1e-3)


def test_probe_index_picks_another_batch():
    module, data = tiny_task("bos_ints_attn_only")
    first, _ = run_analysis(module, data, step=0, probe_batch_size=8, hook_mean_ablation=False)
    second, _ = run_analysis(module, data, step=0, probe_batch_size=8, probe_index=1, hook_mean_ablation=False)
    assert first["loss"] != second["loss"]


@pytest.mark.parametrize("task", ["bos_ints_attn_only", "affine_recurrence"])
def test_analysis_leaves_weights_modes_grads_and_global_rng_untouched(task):
    module, data = tiny_task(task)
    module.train()
    module.model.blocks[0].eval()  # a mixed state must come back as it was, not as all-train
    module.model(module.model_input(data.make_batch(Stream.TRAIN, 0, 2))).float().sum().backward()
    weights = {name: tensor.clone() for name, tensor in module.state_dict().items()}
    grads = {
        name: parameter.grad.clone() for name, parameter in module.named_parameters() if parameter.grad is not None
    }
    modes = {name: submodule.training for name, submodule in module.named_modules()}
    rng = torch.get_rng_state()
    torch.set_float32_matmul_precision("high")  # TF32 where a GPU has it: analysis turns it off and back on

    run_analysis(module, data, step=0, probe_batch_size=8)

    assert torch.get_float32_matmul_precision() == "high"
    torch.set_float32_matmul_precision("highest")

    assert torch.equal(torch.get_rng_state(), rng)
    assert {name: submodule.training for name, submodule in module.named_modules()} == modes
    assert all(torch.equal(tensor, weights[name]) for name, tensor in module.state_dict().items())
    assert all(
        torch.equal(parameter.grad, grads[name]) for name, parameter in module.named_parameters() if name in grads
    )
    assert torch.is_grad_enabled()
    assert all(not hook_point.fwd_hooks for hook_point in module.model.hook_dict.values())


def test_bf16_weights_are_analyzed_in_fp32_without_being_cast():
    module, data = tiny_task("bos_ints_attn_only")
    reference, _ = run_analysis(module, data, step=0, probe_batch_size=8, hook_mean_ablation=False)
    module.to(torch.bfloat16)
    weights = {name: tensor.clone() for name, tensor in module.state_dict().items()}
    summary, tensors = run_analysis(module, data, step=0, probe_batch_size=8, hook_mean_ablation=False)
    assert all(
        torch.equal(tensor, weights[name]) and tensor.dtype == weights[name].dtype
        for name, tensor in module.state_dict().items()
    )
    assert module.model.W_E.dtype == torch.bfloat16
    assert all(tensor.dtype == torch.float32 for tensor in tensors.values())
    assert summary["loss"] == pytest.approx(
        reference["loss"], rel=0.05
    )  # only the bf16 rounding of the weights differs


@pytest.mark.parametrize("task", ["bos_ints_mlp", "affine_recurrence"])
def test_summary_attributions_add_up_to_the_output_less_biases(task):
    module, data = tiny_task(task)
    with torch.no_grad():  # LayerNorm scales far from 1: an attribution that forgets ln_final.w cannot add up
        for name, parameter in module.model.named_parameters():
            if name.endswith(".w"):
                parameter.copy_(torch.rand_like(parameter) * 3 + 0.2)
    summary, _ = run_analysis(module, data, step=0, probe_batch_size=8, hook_mean_ablation=False, expensive=False)
    total = sum(scores["direct_attribution"] for scores in summary["heads"].values())
    total += sum(values.get("mlp_direct_attribution", 0.0) for values in summary["layers"].values())
    total += sum(summary["direct_attribution"].values())
    batch = data.make_batch(Stream.PROBE, 0, 8)
    first, targets = module.hparams.first_target_pos, module.targets(batch)
    output = module.model(module.model_input(batch))[:, first:]
    b_U = processed_copy(module.model, center_unembed=task != "affine_recurrence").b_U
    if task == "affine_recurrence":
        expected = ((output - b_U) * targets).sum(-1).mean()
    else:
        correct = output.gather(-1, targets[..., None])[..., 0]
        expected = (correct - output.mean(-1) - (b_U[targets] - b_U.mean())).mean()
    assert total == pytest.approx(expected.item(), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("task", TASKS)
def test_the_processed_view_refilled_after_training_equals_a_fresh_processed_copy(task):
    module, _ = tiny_task(task)
    center_unembed = task != "affine_recurrence"
    model = module.model
    first = processed_view(model, center_unembed)
    for _ in range(2):  # the weights move, LayerNorm scales far from 1: the view must follow, folded
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                parameter.copy_(torch.rand_like(parameter) * 3 + 0.2 if name.endswith(".w") else parameter + 0.3)
        view = processed_view(model, center_unembed)
        assert view is first
        fresh = processed_copy(model, center_unembed).state_dict()
        assert view.state_dict().keys() == fresh.keys()
        for name, tensor in view.state_dict().items():
            assert torch.equal(tensor, fresh[name]), name
