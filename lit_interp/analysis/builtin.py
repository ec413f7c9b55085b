"""The analyses lit_interp runs at every snapshot, each a registry record around the plain functions it calls."""

from __future__ import annotations

import torch

from lit_interp.analysis import attribution, circuits, patching, recurrence
from lit_interp.analysis import induction as induction_analysis
from lit_interp.analysis.ablation import head_ablation_losses, hook_mean_ablation_losses
from lit_interp.analysis.adversarial import adversarial_analysis
from lit_interp.analysis.attribution import component_direct_attribution, outside_subspace_fraction
from lit_interp.analysis.circuits import (
    composition_scores,
    effective_rank,
    eigenvalue_scores,
    full_ov_circuits,
    full_qk_circuits,
    has_positional_embeddings,
    head_singular_values,
    kq_composition_circuits,
    ov_copying_scores,
    ov_neuron_circuits,
    positional_qk_circuits,
)
from lit_interp.analysis.learning_coefficient import (
    LLC_SETTINGS,
    devinterp_available,
    local_learning_coefficient,
    training_sequences,
    wants_learning_coefficient,
)
from lit_interp.analysis.neurons import (
    dead_neuron_fraction,
    neuron_activation_by_position,
    neuron_firing_frequency,
)
from lit_interp.analysis.patterns import (
    attention_entropy,
    attention_pattern,
    bos_scores,
    mean_attention_patterns,
    mean_attention_scores,
    previous_token_scores,
    repeated_sequence_scores,
)
from lit_interp.analysis.recurrence import (
    coefficient_bin_edges,
    loss_by_coefficient_size,
    recurrence_parameters,
)
from lit_interp.analysis.registry import (
    Analysis,
    AnalysisContext,
    Summary,
    Tensors,
    head_fragment,
    layer_fragment,
    per_head,
)
from lit_interp.analysis.rotary import is_rotary, mean_off_diagonal, rotary_similarities
from lit_interp.analysis.term_importance import supports_term_importance
from lit_interp.analysis.term_importance import term_importance as term_importance_losses

N_EXAMPLES = 8  # probe sequences whose own attention patterns a report shows
# Probe sequences repeated for the duplicate and induction scores: their own forward pass, and
# 64 x half the context already averages thousands of query positions.
REPEATED_SEQUENCES = 64


def attention(context: AnalysisContext) -> tuple[Summary, Tensors]:
    cache, n_layers = context.cache, context.model.cfg.n_layers
    by_layer = [attention_pattern(cache, layer) for layer in range(n_layers)]  # [batch head q k] each
    patterns = torch.stack([pattern.mean(0) for pattern in by_layer])
    scores = {
        "prev_token_score": previous_token_scores(patterns),
        "attention_entropy": torch.stack([attention_entropy(pattern) for pattern in by_layer]),
    }
    if context.has_bos:
        scores["bos_score"] = bos_scores(patterns)
    tensors = {
        "attention_patterns": patterns,
        "attention_scores": mean_attention_scores(cache, n_layers),
        "example_attention_patterns": torch.stack([pattern[:N_EXAMPLES] for pattern in by_layer], dim=1),
    }
    if context.token_task:  # the tokens the model read (a next-token task's batch holds one more)
        tensors["example_inputs"] = context.task.model_input(context.batch[:N_EXAMPLES]).float()
    return head_fragment(scores), tensors


def _repeated_sequence_scores(context: AnalysisContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """`repeated_sequence_scores` on the first probe sequences, once per snapshot (two analyses read it)."""
    if "repeated_sequence" not in context.memo:
        inputs = context.task.model_input(context.batch[:REPEATED_SEQUENCES])
        context.memo["repeated_sequence"] = repeated_sequence_scores(
            context.model, inputs, prefix_len=int(context.has_bos)
        )
    return context.memo["repeated_sequence"]


def _composition_scores(context: AnalysisContext) -> dict[str, torch.Tensor]:
    if "composition" not in context.memo:
        context.memo["composition"] = composition_scores(context.processed)
    return context.memo["composition"]


def repeated_sequence(context: AnalysisContext) -> tuple[Summary, Tensors]:
    result = _repeated_sequence_scores(context)
    if result is None:
        return {}, {}
    duplicate, induction, patterns = result
    return head_fragment({"duplicate_score": duplicate, "induction_score": induction}), {
        "repeated_sequence_patterns": patterns
    }


def head_ablation(context: AnalysisContext) -> tuple[Summary, Tensors]:
    losses = {
        mode: head_ablation_losses(context.model, context.task, context.batch, mode, context.cache)
        for mode in ("zero", "mean")
    }
    summary = head_fragment({f"{mode}_ablation_loss": loss for mode, loss in losses.items()})
    return summary, {f"head_{mode}_ablation_loss": loss for mode, loss in losses.items()}


def hook_mean_ablation(context: AnalysisContext) -> tuple[Summary, Tensors]:
    losses = hook_mean_ablation_losses(context.model, context.task, context.batch, context.cache)
    return {"hooks": {name: {"mean_ablation_loss": loss} for name, loss in losses.items()}}, {}


def ov_circuits(context: AnalysisContext) -> tuple[Summary, Tensors]:
    full_ov = full_ov_circuits(context.processed)
    summary = head_fragment({"ov_copying_score": ov_copying_scores(full_ov)}) if context.token_task else {}
    return summary, per_head("ov_circuit", full_ov)


def eigenvalues_and_singular_values(context: AnalysisContext) -> tuple[Summary, Tensors]:
    model = context.processed
    singular = head_singular_values(model)
    scores = {"ov_eigen_score": eigenvalue_scores(model.OV), "qk_eigen_score": eigenvalue_scores(model.QK)}
    scores |= {f"{name}_effective_rank": effective_rank(values) for name, values in singular.items()}
    return head_fragment(scores), {f"{name}_singular_values": values for name, values in singular.items()}


def composition(context: AnalysisContext) -> tuple[Summary, Tensors]:
    scores = _composition_scores(context)
    return {
        "composition": {mode: values.tolist() for mode, values in scores.items()}
        | {"labels": context.model.all_head_labels()}
    }, {}


def qk_circuits(context: AnalysisContext) -> tuple[Summary, Tensors]:
    tensors = per_head("qk_circuit", full_qk_circuits(context.processed))
    if has_positional_embeddings(context.processed):
        tensors |= per_head("positional_qk_circuit", positional_qk_circuits(context.processed))
    return {}, tensors


def kq_composition(context: AnalysisContext) -> tuple[Summary, Tensors]:
    circuits = kq_composition_circuits(context.processed)
    return {}, {
        f"kq_composition_circuit_from_L0H{writer}.L1H{reader}": circuits[writer, reader]
        for writer in range(circuits.shape[0])
        for reader in range(circuits.shape[1])
    }


def _attribution(context: AnalysisContext) -> tuple[torch.Tensor, list[str]]:
    """Every component's direct attribution by position, once per snapshot (attribution and backup share it)."""
    if "direct_attribution" not in context.memo:
        context.memo["direct_attribution"] = component_direct_attribution(
            context.cache, context.processed.W_U, context.targets, context.first_target_pos
        )
    return context.memo["direct_attribution"]


def _head_attribution(context: AnalysisContext) -> torch.Tensor:
    by_position, labels = _attribution(context)
    cfg = context.model.cfg
    return by_position[labels.index("L0H0") :][: cfg.n_layers * cfg.n_heads].reshape(cfg.n_layers, cfg.n_heads, -1)


def direct_attribution(context: AnalysisContext) -> tuple[Summary, Tensors]:
    by_position, labels = _attribution(context)
    by_label = dict(zip(labels, by_position.mean(-1).tolist()))
    cfg = context.model.cfg
    heads = _head_attribution(context)
    per_layer = {"attn_direct_attribution": heads.mean(-1).sum(-1)}
    if not cfg.attn_only:
        per_layer["mlp_direct_attribution"] = torch.tensor([by_label[f"mlp{layer}"] for layer in range(cfg.n_layers)])
    summary = head_fragment({"direct_attribution": heads.mean(-1)}) | layer_fragment(per_layer)
    summary["direct_attribution"] = {
        label: by_label[label] for label in ("embed", "pos_embed", "attn_bias") if label in by_label
    }
    return summary, {"direct_attribution_by_position": heads, "component_direct_attribution": by_position}


def logit_lens(context: AnalysisContext) -> tuple[Summary, Tensors]:
    result = attribution.logit_lens(context.model, context.task, context.batch, context.cache)
    return layer_fragment({f"logit_lens_{name}": values for name, values in result.items()}), {}


def rotary(context: AnalysisContext) -> tuple[Summary, Tensors]:
    similarities = rotary_similarities(context.cache, context.model.cfg.n_layers)
    tensors: Tensors = {}
    for name, similarity in similarities.items():
        tensors |= per_head(f"rotary_similarity.{name}", similarity)
    return head_fragment({"rotary_q_similarity": mean_off_diagonal(similarities["q"])}), tensors


def adversarial_inputs(context: AnalysisContext) -> tuple[Summary, Tensors]:
    losses, patterns = adversarial_analysis(context.model, context.task, context.batch, context.has_bos)
    losses = {"clean_loss": context.task.loss(context.output, context.batch).item()} | losses  # the clean run, reused
    return {"adversarial": losses}, {
        f"adversarial_attention_patterns_{name}": pattern for name, pattern in patterns.items()
    }


def term_importance(context: AnalysisContext) -> tuple[Summary, Tensors]:
    layer = context.model.cfg.n_layers - 1  # the last layer reads the most composition
    losses, mean_terms = term_importance_losses(context.model, context.task, context.batch, context.cache, layer)
    tensors = {
        f"attn_score_terms.{name}.L{layer}H{head}": term[head]
        for name, term in mean_terms.items()
        for head in range(len(term))
    }
    return {"term_importance": {"layer": layer, **losses}}, tensors


def neurons(context: AnalysisContext) -> tuple[Summary, Tensors]:
    n_layers = context.model.cfg.n_layers
    frequency = neuron_firing_frequency(context.cache, n_layers)
    tensors = {"neuron_firing_frequency": frequency}
    by_position = neuron_activation_by_position(context.cache, n_layers)
    tensors |= {f"neuron_{name}_by_position": values for name, values in by_position.items()}
    tensors |= per_head("ov_neuron_circuit", ov_neuron_circuits(context.processed))
    return layer_fragment({"dead_neuron_fraction": dead_neuron_fraction(frequency)}), tensors


def embedding_subspace(context: AnalysisContext) -> tuple[Summary, Tensors]:
    basis = circuits.embedding_subspace(context.model.W_E)
    fractions = outside_subspace_fraction(context.cache, basis)
    return layer_fragment({f"{kind}_outside_embedding_fraction": values for kind, values in fractions.items()}), {}


def activation_patching(context: AnalysisContext) -> tuple[Summary, Tensors]:
    losses, tensors = patching.activation_patching(
        context.model, context.task, context.batch, context.cache, context.bos_token
    )
    return {"patching": losses} | head_fragment({"patching_score": tensors["head_patching"]}), tensors


def backup_heads(context: AnalysisContext) -> tuple[Summary, Tensors]:
    clean = _head_attribution(context).mean(-1)
    (layer, head), change, loss = attribution.backup_heads(
        context.model, context.task, context.batch, context.processed.W_U, clean
    )
    summary = {"backup": {"ablated_layer": layer, "ablated_head": head, "ablated_loss": loss}}
    return summary | head_fragment({"backup_attribution_change": change}), {"backup_attribution_change": change}


def _coefficients(context: AnalysisContext) -> tuple[torch.Tensor, torch.Tensor]:
    return recurrence_parameters(context.batch, context.datamodule.order)


def recurrence_loss(context: AnalysisContext) -> tuple[Summary, Tensors]:
    coefficients, _ = _coefficients(context)
    edges = coefficient_bin_edges(context.datamodule.coefficient_bounds)
    losses = loss_by_coefficient_size(context.output, context.targets, context.first_target_pos, coefficients, edges)
    return {"recurrence": {"order": context.datamodule.order, **losses}}, {}


def parameter_probes(context: AnalysisContext) -> tuple[Summary, Tensors]:
    coefficients, constant = _coefficients(context)
    r2 = recurrence.parameter_probes(context.cache, coefficients, constant)
    return layer_fragment({f"probe_{name}_r2": values for name, values in r2.items()}), {}


def prefix_matching(context: AnalysisContext) -> tuple[Summary, Tensors]:
    patterns = torch.stack(
        [attention_pattern(context.cache, layer) for layer in range(context.model.cfg.n_layers)], dim=1
    )  # batch layer head q k
    scores, n_queries = induction_analysis.prefix_matching_scores(patterns, context.task.model_input(context.batch))
    return head_fragment({"prefix_matching_score": scores}) | {"prefix_matching": {"queries": n_queries}}, {}


def in_context_loss(context: AnalysisContext) -> tuple[Summary, Tensors]:
    inputs = context.task.model_input(context.batch[:REPEATED_SEQUENCES])
    losses = induction_analysis.in_context_losses(context.model, inputs, prefix_len=int(context.has_bos))
    return ({"in_context": losses} if losses is not None else {}), {}


def induction_circuit(context: AnalysisContext) -> tuple[Summary, Tensors]:
    result = _repeated_sequence_scores(context)
    if result is None:
        return {}, {}
    _, induction, _ = result
    prev_token = previous_token_scores(mean_attention_patterns(context.cache, context.model.cfg.n_layers))
    circuit = induction_analysis.induction_circuit(
        prev_token, induction, _composition_scores(context)["k"], context.model.cfg.d_model
    )
    return {"induction_circuit": circuit}, {}


def learning_coefficient(context: AnalysisContext) -> tuple[Summary, Tensors]:
    sequences = training_sequences(context.datamodule, LLC_SETTINGS.n_sequences, context.batch.device)
    estimate = local_learning_coefficient(context.model, context.task, sequences, LLC_SETTINGS)
    return {"learning_coefficient": estimate}, {}


def _has_prefix_matching_queries(context: AnalysisContext) -> bool:
    """Probe sequences that repeat too few tokens leave nothing to score: the key is absent rather than NaN."""
    if not context.token_task:
        return False
    queries = induction_analysis.prefix_matching_queries(context.task.model_input(context.batch))
    return int(queries.sum()) >= induction_analysis.MIN_PREFIX_MATCHING_QUERIES


def _wants_learning_coefficient(context: AnalysisContext) -> bool:
    return wants_learning_coefficient(context.task) and devinterp_available()


def _predicts_next_token(context: AnalysisContext) -> bool:
    return induction_analysis.predicts_next_token(context.task, context.batch)


def _is_recurrence(context: AnalysisContext) -> bool:
    return not context.token_task and all(hasattr(context.datamodule, name) for name in ("order", "coefficient_bounds"))


def _patchable(context: AnalysisContext) -> bool:
    """The answer's source (position -2 of the batch) must be an ordinary input, not BOS."""
    return context.batch.shape[1] >= 2 + int(context.has_bos)


BUILTIN_ANALYSES = [
    Analysis("attention", attention),
    Analysis("repeated_sequence", repeated_sequence),
    Analysis("ov_circuits", ov_circuits),
    Analysis("eigenvalues_and_singular_values", eigenvalues_and_singular_values),
    Analysis("direct_attribution", direct_attribution),
    Analysis("logit_lens", logit_lens),
    Analysis("qk_circuits", qk_circuits),
    Analysis("rotary", rotary, applies=lambda context: is_rotary(context.model)),
    Analysis("composition", composition, applies=lambda context: context.model.cfg.n_layers >= 2),
    Analysis("prefix_matching", prefix_matching, applies=_has_prefix_matching_queries),
    Analysis("in_context_loss", in_context_loss, applies=_predicts_next_token),
    Analysis(
        "induction_circuit",
        induction_circuit,
        applies=lambda context: context.token_task and context.model.cfg.n_layers >= 2,
    ),
    Analysis(
        "kq_composition",
        kq_composition,
        applies=lambda context: context.model.cfg.attn_only and context.model.cfg.n_layers >= 2,
    ),
    Analysis("term_importance", term_importance, applies=lambda context: supports_term_importance(context.model)),
    Analysis("neurons", neurons, applies=lambda context: not context.model.cfg.attn_only),
    Analysis("recurrence_loss", recurrence_loss, applies=_is_recurrence),
    Analysis("embedding_subspace", embedding_subspace, applies=lambda context: not context.token_task),
    Analysis("hook_mean_ablation", hook_mean_ablation, applies=lambda context: context.hook_mean_ablation),
    # One partial forward pass per head and mode: most of a snapshot's cost on the larger configs.
    Analysis("head_ablation", head_ablation, expensive=True),
    # Two forward passes on constructed inputs (like patching): a robustness check, not a training signal.
    Analysis("adversarial_inputs", adversarial_inputs, applies=lambda context: context.token_task, expensive=True),
    Analysis("activation_patching", activation_patching, applies=_patchable, expensive=True),
    Analysis("backup_heads", backup_heads, expensive=True),
    Analysis("parameter_probes", parameter_probes, applies=_is_recurrence, expensive=True),
    # Hundreds of SGLD steps per estimate: the costliest analysis by far, for tasks that ask, with the devinterp extra.
    Analysis("learning_coefficient", learning_coefficient, applies=_wants_learning_coefficient, expensive=True),
]
