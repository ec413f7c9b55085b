"""`run_analysis`: every analysis that applies to a task module, on a probe batch, as (summary dict, tensors)."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torchmetrics.functional import r2_score
from transformer_lens import ActivationCache, HookedTransformer

from lit_interp.analysis.ablation import head_ablation_losses, hook_mean_ablation_losses
from lit_interp.analysis.adversarial import adversarial_losses
from lit_interp.analysis.circuits import composition_scores, direct_attribution, eigenvalue_scores, full_ov_circuits, ov_copying_scores
from lit_interp.analysis.losses import Task, is_token_task
from lit_interp.analysis.patterns import bos_scores, mean_attention_patterns, previous_token_scores, repeated_sequence_scores
from lit_interp.analysis.rotary import is_rotary, mean_off_diagonal, rotary_similarities
from lit_interp.analysis.term_importance import supports_term_importance, term_importance
from lit_interp.errors import require
from lit_interp.tasks.base import PROBE_STREAM, SyntheticDataModule, TaskModule


# Measured cost of one call (config-sized untrained models), without / with the hook sweep, beside one
# bare training step at the config's batch size. CPU: 1 thread of a busy 2-core machine; GPU: one H100.
#                       CPU probe 256        CPU probe 64         train step   GPU probe 256     train step (bf16)
#   prev_token_digits   0.17 s / 0.73 s      0.05 s / 0.15 s      24 ms        0.02 s / 0.04 s   8.5 ms
#   bos_ints_attn_only  0.17 s / 0.37 s      0.07 s / 0.14 s      41 ms        0.06 s / 0.07 s   10 ms
#   bos_ints_mlp        0.73 s / 3.90 s      0.25 s / 1.06 s      319 ms       0.04 s / 0.11 s   18 ms
#   affine_recurrence   6.58 s / 13.6 s      1.65 s / 3.55 s      145 ms       0.15 s / 0.64 s   36 ms
def run_analysis(
    module: TaskModule,
    datamodule: SyntheticDataModule,
    step: int,
    probe_batch_size: int = 256,
    probe_index: int = 0,
    sweep_hooks: bool = True,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Analyse `module` on batch `probe_index` of `datamodule`'s probe stream, leaving training untouched.

    Runs in eval mode, under no_grad with autocast off, in fp32 (on a float copy of the model if
    its weights are not fp32), on the module's device, and restores every submodule's train/eval
    mode. The probe batch comes from the datamodule's own seeded generator: the global RNG is
    never drawn. `sweep_hooks=False` skips seed 004's per-hook sweep, about half the cost.

    Returns (summary, tensors). The summary follows issue 3's schema (step, task, loss, metrics,
    heads, hooks, composition, adversarial, term_importance), a key that does not apply being
    absent; heads also carry `rotary_q_similarity` in rotary models. Tensors (fp32, CPU,
    contiguous, each its own storage) are:
        attention_patterns, repeated_sequence_patterns   [layer head query_pos key_pos]
        head_zero_ablation_loss, head_mean_ablation_loss [layer head]
        direct_attribution_by_position                   [layer head target_pos] (from first_target_pos)
        ov_circuit.L{l}H{h}                              [d_vocab d_vocab] W_E W_OV W_U
        rotary_similarity.{q,rot_q,k,rot_k,q_vs_k}.L{l}H{h} [pos pos]     (rotary models)
        attn_score_terms.{direct,k_comp,q_comp,kq_comp}.L{l}H{h} [query_pos key_pos] (term importance)
    """
    require(probe_batch_size >= 1, f"probe_batch_size={probe_batch_size} must be >= 1")
    batch = datamodule.make_batch(PROBE_STREAM, probe_index, probe_batch_size, device=module.device)
    bos_token = getattr(datamodule, "bos_token", None)
    with _read_only(module) as model:
        summary, tensors = _analyse(model, module, batch, step, bos_token, sweep_hooks)
    # copy=True: each per-head slice gets its own storage instead of keeping its whole stack alive.
    return summary, {name: tensor.detach().to("cpu", torch.float32, copy=True).contiguous() for name, tensor in tensors.items()}


@contextmanager
def _read_only(module: torch.nn.Module) -> Iterator[HookedTransformer]:
    """Eval mode, no_grad, autocast off; yields an fp32 model; restores each submodule's mode after."""
    modes = {submodule: submodule.training for submodule in module.modules()}
    module.eval()
    try:
        with torch.no_grad(), torch.autocast(module.device.type, enabled=False):
            model = module.model
            if any(parameter.dtype != torch.float32 for parameter in model.parameters()):
                model = copy.deepcopy(model).float()  # never cast the training weights in place
            yield model
    finally:
        for submodule, training in modes.items():
            submodule.training = training


def _analyse(
    model: HookedTransformer, task: Task, batch: torch.Tensor, step: int, bos_token: int | None, sweep_hooks: bool
) -> tuple[dict, dict[str, torch.Tensor]]:
    output, cache = model.run_with_cache(task.model_input(batch))
    token_task = is_token_task(batch)
    summary: dict[str, Any] = {
        "step": int(step),
        "task": type(task).__name__,
        "loss": task.loss(output, batch).item(),
        "metrics": _metrics(output, task.targets(batch), task.hparams.first_target_pos),
    }
    head_scores, tensors = _head_scores(model, task, batch, cache, bos_token is not None, token_task)
    labels = model.all_head_labels()
    summary["heads"] = {
        label: {name: scores.flatten()[index].item() for name, scores in head_scores.items()} for index, label in enumerate(labels)
    }
    if sweep_hooks:
        summary["hooks"] = {name: {"mean_ablation_loss": loss} for name, loss in hook_mean_ablation_losses(model, task, batch, cache).items()}
    if model.cfg.n_layers >= 2:
        summary["composition"] = {mode: scores.tolist() for mode, scores in composition_scores(model).items()} | {"labels": labels}
    if token_task:
        summary["adversarial"] = adversarial_losses(model, task, batch, has_bos=bos_token is not None)
    if supports_term_importance(model):
        layer = model.cfg.n_layers - 1  # the last layer reads the most composition
        losses, mean_terms = term_importance(model, task, batch, cache, layer)
        summary["term_importance"] = {"layer": layer, **losses}
        tensors |= {f"attn_score_terms.{name}.L{layer}H{head}": term[head] for name, term in mean_terms.items() for head in range(len(term))}
    return summary, tensors


def _per_head(prefix: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """`prefix.L{layer}H{head}` -> tensor[layer, head]: one matrix per head, as a report plots them."""
    return {f"{prefix}.L{layer}H{head}": tensor[layer, head] for layer in range(tensor.shape[0]) for head in range(tensor.shape[1])}


def _metrics(output: torch.Tensor, targets: torch.Tensor, first_target_pos: int) -> dict[str, float]:
    predictions = output[:, first_target_pos:]
    if targets.is_floating_point():
        r2 = r2_score(predictions.flatten(0, 1), targets.flatten(0, 1), multioutput="variance_weighted")
        return {"r2": r2.item()}
    return {"acc": (predictions.argmax(-1) == targets).float().mean().item()}


def _head_scores(
    model: HookedTransformer, task: Task, batch: torch.Tensor, cache: ActivationCache, has_bos: bool, token_task: bool
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per-head scores [layer head] in the summary's key order, and the tensors behind them."""
    n_layers = model.cfg.n_layers
    patterns = mean_attention_patterns(cache, n_layers)
    scores = {"prev_token_score": previous_token_scores(patterns)}
    tensors = {"attention_patterns": patterns}
    if has_bos:
        scores["bos_score"] = bos_scores(patterns)
    repeated = repeated_sequence_scores(model, task.model_input(batch), prefix_len=int(has_bos))
    if repeated is not None:
        scores["duplicate_score"], scores["induction_score"], tensors["repeated_sequence_patterns"] = repeated
    for mode in ("zero", "mean"):
        scores[f"{mode}_ablation_loss"] = tensors[f"head_{mode}_ablation_loss"] = head_ablation_losses(model, task, batch, mode, cache)
    full_ov = full_ov_circuits(model)
    tensors |= _per_head("ov_circuit", full_ov)
    if token_task:
        scores["ov_copying_score"] = ov_copying_scores(full_ov)
    scores["ov_eigen_score"] = eigenvalue_scores(model.OV)
    scores["qk_eigen_score"] = eigenvalue_scores(model.QK)
    attribution = direct_attribution(model, cache, task.targets(batch), task.hparams.first_target_pos)
    scores["direct_attribution"] = attribution.mean(-1)
    tensors["direct_attribution_by_position"] = attribution
    if is_rotary(model):
        similarities = rotary_similarities(cache, n_layers)
        scores["rotary_q_similarity"] = mean_off_diagonal(similarities["q"])
        for name, similarity in similarities.items():
            tensors |= _per_head(f"rotary_similarity.{name}", similarity)
    return scores, tensors
