"""The analyses lit_interp runs at every snapshot, each a registry record around the plain functions it calls."""

from __future__ import annotations

import torch

from lit_interp.analysis import attribution, circuits, fourier, patching, recurrence
from lit_interp.analysis.ablation import head_ablation_losses, hook_mean_ablation_losses
from lit_interp.analysis.adversarial import adversarial_analysis
from lit_interp.analysis.attribution import (
    block_outside_subspace_ratios,
    component_direct_attribution,
    outside_subspace_fraction,
)
from lit_interp.analysis.circuits import (
    composition_scores,
    effective_rank,
    eigenvalue_scores,
    full_ov_circuits,
    full_ov_factored,
    full_qk_circuits,
    has_positional_embeddings,
    head_singular_values,
    kq_composition_circuits,
    ov_copying_scores,
    ov_neuron_circuits,
    positional_qk_circuits,
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
from lit_interp.analysis.weights import centres_writing_weights
from lit_interp.heads import head_label
from lit_interp.tasks.base import Stream

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
    if context.token_task:
        tensors["example_inputs"] = context.batch[:N_EXAMPLES].float()
    return head_fragment(scores), tensors


def repeated_sequence(context: AnalysisContext) -> tuple[Summary, Tensors]:
    inputs = context.task.model_input(context.batch[:REPEATED_SEQUENCES])
    result = repeated_sequence_scores(context.model, inputs, prefix_len=int(context.has_bos))
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
    scores = {
        "ov_eigen_score": eigenvalue_scores(full_ov_factored(model)),
        "ov_residual_eigen_score": eigenvalue_scores(model.OV),
        "qk_eigen_score": eigenvalue_scores(model.QK),
    }
    scores |= {f"{name}_effective_rank": effective_rank(values) for name, values in singular.items()}
    return head_fragment(scores), {f"{name}_singular_values": values for name, values in singular.items()}


def composition(context: AnalysisContext) -> tuple[Summary, Tensors]:
    scores = composition_scores(context.processed)
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
        f"kq_composition_circuit_from_{head_label(0, writer)}.{head_label(1, reader)}": circuits[writer, reader]
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
        f"attn_score_terms.{name}.{head_label(layer, head)}": term[head]
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
    fractions = outside_subspace_fraction(context.cache, circuits.embedding_subspace(context.model.W_E))
    ratios = block_outside_subspace_ratios(
        context.cache,
        circuits.embedding_subspace(context.processed.W_E),
        centre=centres_writing_weights(context.model.cfg),
    )
    per_layer = {f"{kind}_outside_embedding_fraction": values for kind, values in fractions.items()}
    return layer_fragment(per_layer | {"block_out_outside_embedding_ratio": ratios}), {}


def activation_patching(context: AnalysisContext) -> tuple[Summary, Tensors]:
    if _is_recurrence(context):
        corrupted = recurrence.with_other_parameters(context.batch, context.datamodule.order)
    else:
        # Ids below d_vocab_out are answers; the rest (an "=" token) are not inputs to corrupt into.
        corrupted = patching.corrupt_previous(context.batch, context.bos_token, context.model.cfg.d_vocab_out)
    losses, tensors = patching.activation_patching(context.model, context.task, context.batch, corrupted, context.cache)
    cfg = context.model.cfg
    scores = tensors.get("head_patching", torch.full((cfg.n_layers, cfg.n_heads), torch.nan))  # NaN: see the reason
    return {"patching": losses} | head_fragment({"patching_score": scores}), tensors


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
    datamodule = context.datamodule
    vectors = datamodule.make_batch(Stream.LINEAR_PROBE, 0, recurrence.PROBE_SEQUENCES, device=context.batch.device)
    residuals = recurrence.last_position_residuals(context.model, context.task.model_input(vectors))
    coefficients, constant = recurrence_parameters(vectors, datamodule.order)
    r2, section = recurrence.parameter_probes(residuals, coefficients, constant)
    return layer_fragment({f"probe_{name}_r2": values for name, values in r2.items()}) | {"probes": section}, {}


def _is_modular_addition_data(context: AnalysisContext) -> bool:
    """A datamodule holding a train/test split of the pairs mod p (`ModularAdditionDataModule`)."""
    return all(hasattr(context.datamodule, name) for name in ("p", "train_pairs", "test_pairs"))


def _is_modular_addition(context: AnalysisContext) -> bool:
    """Modular addition data and a model with MLPs: what the Fourier progress measures read."""
    return _is_modular_addition_data(context) and not context.model.cfg.attn_only


def _all_pairs(context: AnalysisContext) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits at `=` over all p² pairs and the last layer's neurons there, once per snapshot."""
    if "all_pairs" not in context.memo:
        context.memo["all_pairs"] = fourier.all_pairs_run(context.model, context.datamodule.p)
    return context.memo["all_pairs"]


def _key_frequencies(context: AnalysisContext) -> tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]:
    """(key frequencies, the neurons' 2-D spectrum, each neuron's frequency and its share), once per snapshot."""
    if "key_frequencies" not in context.memo:
        _, neurons = _all_pairs(context)
        spectrum = fourier.neuron_fourier(neurons)
        frequency, fraction = fourier.neuron_frequencies(fourier.frequency_fractions(spectrum))
        context.memo["key_frequencies"] = fourier.key_frequencies(frequency, fraction), spectrum, frequency, fraction
    return context.memo["key_frequencies"]


def fourier_spectra(context: AnalysisContext) -> tuple[Summary, Tensors]:
    model, p = context.processed, context.datamodule.p
    embed = fourier.embedding_fourier_norms(model.W_E[:p])  # the number tokens, not `=`
    neuron_logit = fourier.neuron_logit_fourier_norms(model.blocks[-1].mlp.W_out, model.W_U)
    summary = {"embed_gini": fourier.gini(embed), "neuron_logit_gini": fourier.gini(neuron_logit)}
    return {"fourier": summary}, {"embed_fourier_norms": embed, "neuron_logit_fourier_norms": neuron_logit}


def neuron_frequencies(context: AnalysisContext) -> tuple[Summary, Tensors]:
    keys, spectrum, frequency, fraction = _key_frequencies(context)
    explained = fraction.nan_to_num(0.0) >= fourier.NEURON_FRACTION
    assigned = explained & torch.isin(frequency, torch.tensor(keys, dtype=torch.long, device=frequency.device))
    summary = {
        "key_frequencies": keys,
        "n_key_frequencies": len(keys),
        "neuron_fraction_explained": fraction.nanmean().item(),
        "key_neuron_fraction": assigned.double().mean().item(),
    }
    return {"fourier": summary}, {
        "neuron_fourier_norms": spectrum.pow(2).sum(-1).sqrt(),
        "neuron_frequency": frequency.float(),
        "neuron_frequency_fraction": fraction,
    }


def progress_measures(context: AnalysisContext) -> tuple[Summary, Tensors]:
    logits, _ = _all_pairs(context)
    keys = _key_frequencies(context)[0]
    data = context.datamodule
    train_pairs = data.train_pairs.to(logits.device)
    coefficients, mean_logits = fourier.logit_sum_coefficients(logits), logits.double().mean(0)
    train_loss, train_acc = fourier.pair_loss_and_accuracy(logits, train_pairs)
    test_loss, test_acc = fourier.pair_loss_and_accuracy(logits, data.test_pairs.to(logits.device))
    summary = {
        "train_loss": train_loss,
        "train_acc": train_acc,
        "test_loss": test_loss,
        "test_acc": test_acc,
        "restricted_loss": fourier.restricted_loss(mean_logits, coefficients, keys),
        "excluded_loss": fourier.excluded_loss(logits[train_pairs], train_pairs, coefficients, keys),
        "sum_squared_weights": fourier.sum_squared_weights(context.model),
    }
    # What restricted and excluded loss with any other key frequencies (the final snapshot's) need.
    tensors = {
        "logit_sum_coefficients": coefficients,
        "logit_mean": mean_logits,
        "train_logits": logits[train_pairs],
        "train_pairs": train_pairs.float(),
    }
    return {"progress_measures": summary}, tensors


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
    Analysis(
        "kq_composition",
        kq_composition,
        applies=lambda context: context.model.cfg.attn_only and context.model.cfg.n_layers >= 2,
    ),
    Analysis("term_importance", term_importance, applies=lambda context: supports_term_importance(context.model)),
    Analysis("neurons", neurons, applies=lambda context: not context.model.cfg.attn_only),
    Analysis("recurrence_loss", recurrence_loss, applies=_is_recurrence),
    Analysis("embedding_subspace", embedding_subspace, applies=lambda context: not context.token_task),
    Analysis("fourier_spectra", fourier_spectra, applies=_is_modular_addition),
    Analysis("neuron_frequencies", neuron_frequencies, applies=_is_modular_addition),
    Analysis("progress_measures", progress_measures, applies=_is_modular_addition),
    Analysis("hook_mean_ablation", hook_mean_ablation, applies=lambda context: context.hook_mean_ablation),
    # One partial forward pass per head and mode: most of a snapshot's cost on the larger configs.
    Analysis("head_ablation", head_ablation, expensive=True),
    # Two forward passes on constructed inputs (like patching): a robustness check, not a training signal.
    Analysis(
        "adversarial_inputs",
        adversarial_inputs,
        applies=lambda context: context.token_task and not _is_modular_addition_data(context),  # [a, a, b]: no input
        expensive=True,
    ),
    Analysis("activation_patching", activation_patching, applies=_patchable, expensive=True),
    Analysis("backup_heads", backup_heads, expensive=True),
    Analysis("parameter_probes", parameter_probes, applies=_is_recurrence, expensive=True),
]
