"""The analyses lit_interp runs at every snapshot, each a registry record around the plain functions it calls."""

from __future__ import annotations

import torch

from lit_interp.analysis import attribution, circuits, fourier, logit_difference, patching, recurrence
from lit_interp.analysis import induction as induction_analysis
from lit_interp.analysis.ablation import head_ablation_losses, hook_mean_ablation_losses
from lit_interp.analysis.adversarial import adversarial_analysis
from lit_interp.analysis.attention_positions import (
    attention_by_key_position,
    bos_attention_by_query,
    bos_attention_trend,
    even_offset_attention,
    fixed_position_attention,
)
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
from lit_interp.analysis.examples import attention_with_layer_mean_ablated, targets_by_position, top_k_from_logits
from lit_interp.analysis.interventions import kept_head_losses, qk_identity_losses
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
from lit_interp.analysis.ov_summaries import RANDOM_VECTORS, large_entry_fraction, random_unit_vectors, summed_ov_fit
from lit_interp.analysis.patterns import (
    attention_entropy,
    attention_pattern,
    bos_scores,
    mean_attention_patterns,
    mean_attention_scores,
    previous_token_scores,
    repeated_sequence_scores,
)
from lit_interp.analysis.qk_preferences import qk_diagonal_contrast, recency_preference
from lit_interp.analysis.recurrence import (
    coefficient_bin_edges,
    loss_by_coefficient_size,
    recurrence_parameters,
)
from lit_interp.analysis.recurrence_inputs import (
    C_GRID,
    attention_by_sign,
    loss_by_coefficient,
    loss_by_sequence_length,
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
from lit_interp.analysis.rotary import (
    is_rotary,
    mean_off_diagonal,
    position_similarity,
    rotary_qk_offset,
    rotary_qk_offset_scores,
    rotary_similarities,
)
from lit_interp.analysis.term_importance import attention_score_terms, supports_term_importance
from lit_interp.analysis.term_importance import term_importance as term_importance_losses
from lit_interp.analysis.weights import centres_writing_weights
from lit_interp.heads import head_label
from lit_interp.tasks.base import Stream

N_EXAMPLES = 8  # probe sequences whose own attention patterns a report shows
TOP_K = 5  # next-token predictions kept per position of each example
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
    scores = {
        "ov_eigen_score": eigenvalue_scores(full_ov_factored(model)),
        "ov_residual_eigen_score": eigenvalue_scores(model.OV),
        "qk_eigen_score": eigenvalue_scores(model.QK),
    }
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


def _is_first_order_recurrence(context: AnalysisContext) -> bool:
    """The sign of c splits sequences into oscillating and monotone ones only when c is a single coefficient."""
    return _is_recurrence(context) and context.datamodule.order == 1


def _reads_and_writes_vectors(context: AnalysisContext) -> bool:
    """A vector task whose output lives in its input's space (seed 002's OV fit compares the two)."""
    return not context.token_task and context.model.cfg.d_vocab_out == context.model.cfg.d_vocab


def _token_task_with_other_heads(context: AnalysisContext) -> bool:
    """Backup needs a head besides the ablated one to take over."""
    return context.token_task and context.model.cfg.n_layers * context.model.cfg.n_heads >= 2


def _patchable(context: AnalysisContext) -> bool:
    """The answer's source (position -2 of the batch) must be an ordinary input, not BOS."""
    return context.batch.shape[1] >= 2 + int(context.has_bos)


def example_predictions(context: AnalysisContext) -> tuple[Summary, Tensors]:
    """Token tasks: the top-k predictions of the example sequences; vector tasks: their predictions and targets."""
    if context.token_task:
        examples = context.batch[:N_EXAMPLES]
        top = top_k_from_logits(context.output[:N_EXAMPLES], TOP_K, targets_by_position(context.task, examples))
        return {}, {
            "example_top_k_tokens": top.tokens.float(),
            "example_top_k_probs": top.probs,
            "example_target_rank": top.target_rank,
        }
    first = context.first_target_pos
    return {}, {
        "example_predictions": context.output[:N_EXAMPLES, first:],
        "example_targets": context.targets[:N_EXAMPLES],
    }


def example_neuron_activations(context: AnalysisContext) -> tuple[Summary, Tensors]:
    activations = [context.cache["post", layer][0] for layer in range(context.model.cfg.n_layers)]
    return {}, {"example_neuron_activations": torch.stack(activations)}


def attention_under_ablation(context: AnalysisContext) -> tuple[Summary, Tensors]:
    losses, tensors = {}, {}
    for layer in range(context.model.cfg.n_layers - 1):  # the last layer has no later attention to change
        loss, patterns = attention_with_layer_mean_ablated(context.model, context.task, context.batch, layer)
        losses[f"layer_{layer}_mean_ablated_loss"] = loss
        tensors[f"attention_patterns_layer_{layer}_mean_ablated"] = patterns.mean(0)
        tensors[f"example_attention_patterns_layer_{layer}_mean_ablated"] = patterns[:N_EXAMPLES]
    return {"attention_under_ablation": losses}, tensors


def weight_edits(context: AnalysisContext) -> tuple[Summary, Tensors]:
    """Seed 002's two experiments on the processed copy: each last-layer head's QK (and each layer's) made a
    low-rank identity; each layer-0 head kept alone. In place on the processed view: each edit is undone after."""
    model, task, batch = context.processed, context.task, context.batch
    last = model.cfg.n_layers - 1
    by_head, by_layer = qk_identity_losses(model, task, batch, head_layers=[last], in_place=True)
    heads: dict[str, dict[str, float]] = {
        f"L{last}H{head}": {"qk_identity_loss": loss} for head, loss in enumerate(by_head[0].tolist())
    }
    if model.cfg.n_heads >= 2:
        for head, loss in enumerate(kept_head_losses(model, task, batch, layers=[0], in_place=True)[0].tolist()):
            heads.setdefault(f"L0H{head}", {})["kept_alone_loss"] = loss
    return {"heads": heads} | layer_fragment({"layer_qk_identity_loss": by_layer}), {}


def loss_by_c(context: AnalysisContext) -> tuple[Summary, Tensors]:
    losses, errors = loss_by_coefficient(context.model, context.task, context.datamodule)
    low, high = context.datamodule.coefficient_bounds
    inside = (C_GRID >= low) & (C_GRID <= high)
    summary = {
        "training_c_low": low,
        "training_c_high": high,
        "inside_training_range": losses[inside].mean().item(),
        "outside_training_range": losses[~inside].mean().item() if (~inside).any() else float("nan"),
    }
    return {"loss_by_c": summary}, {"c_grid": C_GRID.clone(), "loss_by_c": losses, "loss_by_c_standard_error": errors}


def loss_by_seq_len(context: AnalysisContext) -> tuple[Summary, Tensors]:
    losses = loss_by_sequence_length(context.model, context.task, context.datamodule)
    summary = {"loss_by_seq_len": {str(seq_len): loss for seq_len, (loss, _) in losses.items()}}
    return summary, {
        "seq_len": torch.tensor(list(losses), dtype=torch.float32),
        "loss_by_seq_len": torch.tensor([loss for loss, _ in losses.values()]),
        "loss_by_seq_len_standard_error": torch.tensor([error for _, error in losses.values()]),
    }


def attention_by_c_sign(context: AnalysisContext) -> tuple[Summary, Tensors]:
    coefficients, _ = _coefficients(context)
    n_layers = context.model.cfg.n_layers
    patterns = torch.stack([attention_pattern(context.cache, layer) for layer in range(n_layers)], dim=1)
    negative, positive = attention_by_sign(patterns, coefficients[:, 0])
    scores = {
        "even_offset_attention_negative_c": even_offset_attention(negative),
        "even_offset_attention_positive_c": even_offset_attention(positive),
    }
    return head_fragment(scores), {"attention_patterns_negative_c": negative, "attention_patterns_positive_c": positive}


def ov_summaries(context: AnalysisContext) -> tuple[Summary, Tensors]:
    model = context.processed
    inputs = context.task.model_input(context.batch).flatten(0, 1)
    fits = {
        "": summed_ov_fit(model, inputs),
        "_random": summed_ov_fit(model, random_unit_vectors(RANDOM_VECTORS, model.cfg.d_vocab, inputs.device)),
    }
    per_layer = {f"summed_ov_{name}{kind}": values for kind, fit in fits.items() for name, values in fit.items()}
    return layer_fragment(per_layer) | head_fragment({"ov_large_entry_fraction": large_entry_fraction(model.OV.AB)}), {}


def ov_qk_matrices(context: AnalysisContext) -> tuple[Summary, Tensors]:
    return {}, per_head("ov_matrix", context.processed.OV.AB) | per_head("qk_matrix", context.processed.QK.AB)


def bos_attention(context: AnalysisContext) -> tuple[Summary, Tensors]:
    by_query = bos_attention_by_query(mean_attention_patterns(context.cache, context.model.cfg.n_layers))
    return head_fragment({"bos_attention_trend": bos_attention_trend(by_query)}), {
        "bos_attention_by_query_pos": by_query
    }


def qk_diagonal(context: AnalysisContext) -> tuple[Summary, Tensors]:
    model = context.processed
    scales = torch.tensor([block.attn.attn_scale for block in model.blocks], dtype=torch.float32)
    excluded = [context.bos_token] if context.has_bos else []
    contrast = qk_diagonal_contrast(full_qk_circuits(model), scales, excluded)
    return head_fragment({"qk_diagonal_contrast": contrast}), {}


def kq_recency(context: AnalysisContext) -> tuple[Summary, Tensors]:
    layer = context.model.cfg.n_layers - 1  # the layer term importance splits
    kq_term = attention_score_terms(context.model, context.cache, layer)["kq_comp"].mean(0)
    recency = recency_preference(kq_term, first_key=int(context.has_bos)).tolist()
    return {"heads": {f"L{layer}H{head}": {"kq_recency": value} for head, value in enumerate(recency)}}, {}


def rotary_offset(context: AnalysisContext) -> tuple[Summary, Tensors]:
    scores = rotary_qk_offset_scores(context.model, context.cache)
    k_similarity = position_similarity(context.cache, context.model.cfg.n_layers, "k")
    summary = head_fragment({"rotary_qk_offset": rotary_qk_offset(scores), "rotary_k_similarity": k_similarity})
    return summary, {"rotary_qk_offset_scores": scores}


def fixed_position(context: AnalysisContext) -> tuple[Summary, Tensors]:
    patterns = mean_attention_patterns(context.cache, context.model.cfg.n_layers)
    share, position = fixed_position_attention(patterns)
    return head_fragment({"fixed_position_attention": share, "fixed_position": position}), {
        "attention_by_key_position": attention_by_key_position(patterns)
    }


def _logit_difference_inputs(context: AnalysisContext) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean run's logit difference per (sequence, target position) and its best incorrect tokens."""
    scored = context.output[:, context.first_target_pos :]
    return (
        logit_difference.logit_difference(scored, context.targets),
        logit_difference.best_incorrect(scored, context.targets),
    )


def logit_difference_attribution(context: AnalysisContext) -> tuple[Summary, Tensors]:
    clean, incorrect = _logit_difference_inputs(context)
    attribution = logit_difference.head_logit_difference_attribution(
        context.cache, context.processed.W_U, context.targets, incorrect, context.first_target_pos
    )
    shares, summary = logit_difference.top_head_shares(attribution, clean)
    scores = {"logit_difference_attribution": attribution, "logit_difference_share": shares}
    return {"logit_difference": summary} | head_fragment(scores), {}


def logit_difference_patching(context: AnalysisContext) -> tuple[Summary, Tensors]:
    summary, tensors = logit_difference.logit_difference_patching(
        context.model, context.task, context.batch, context.output, context.cache, context.bos_token
    )
    scores = head_fragment({"logit_difference_patching_score": tensors["head_patching_logit_difference"]})
    return {"logit_difference_patching": summary} | scores, tensors


def backup_logit_difference(context: AnalysisContext) -> tuple[Summary, Tensors]:
    summary, change = logit_difference.backup_against_naive(
        context.model, context.task, context.batch, context.output, context.cache, context.processed.W_U
    )
    return {"backup_logit_difference": summary} | head_fragment({"backup_logit_difference_change": change}), {
        "backup_logit_difference_change": change
    }


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
    Analysis("example_predictions", example_predictions),
    Analysis(
        "example_neuron_activations",
        example_neuron_activations,
        applies=lambda context: not context.model.cfg.attn_only,
    ),
    Analysis("bos_attention", bos_attention, applies=lambda context: context.has_bos),
    Analysis("fixed_position", fixed_position, applies=lambda context: not context.has_bos),
    Analysis("qk_diagonal", qk_diagonal, applies=lambda context: context.token_task),
    Analysis("kq_recency", kq_recency, applies=lambda context: supports_term_importance(context.model)),
    Analysis("rotary_offset", rotary_offset, applies=lambda context: is_rotary(context.model)),
    Analysis("ov_summaries", ov_summaries, applies=_reads_and_writes_vectors),
    Analysis("attention_by_c_sign", attention_by_c_sign, applies=_is_first_order_recurrence),
    Analysis("logit_difference_attribution", logit_difference_attribution, applies=lambda context: context.token_task),
    # One forward pass per ablated layer.
    Analysis(
        "attention_under_ablation",
        attention_under_ablation,
        applies=lambda context: context.model.cfg.n_layers >= 2,
        expensive=True,
    ),
    # A copy of the model and one forward pass per edit set, from the first edited block: 2 n_heads + n_layers.
    Analysis("weight_edits", weight_edits, expensive=True),
    # Forward passes over constructed sequences: 33 values of c, every shorter length.
    Analysis("loss_by_c", loss_by_c, applies=_is_recurrence, expensive=True),
    Analysis("loss_by_seq_len", loss_by_seq_len, applies=_is_recurrence, expensive=True),
    # Cheap to compute but 2 x n_layers x n_heads d_model x d_model matrices: kept for every k-th snapshot only.
    Analysis("ov_qk_matrices", ov_qk_matrices, applies=lambda context: not context.token_task, expensive=True),
    Analysis(
        "logit_difference_patching",
        logit_difference_patching,
        applies=lambda context: context.token_task and _patchable(context),
        expensive=True,
    ),
    Analysis("backup_logit_difference", backup_logit_difference, applies=_token_task_with_other_heads, expensive=True),
    # Hundreds of SGLD steps per estimate: the costliest analysis by far, for tasks that ask, with the devinterp extra.
    Analysis("learning_coefficient", learning_coefficient, applies=_wants_learning_coefficient, expensive=True),
]
