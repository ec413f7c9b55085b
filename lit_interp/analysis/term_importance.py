"""Attention-score term importance (seed 001): a later layer's scores split by which side reads composed input."""

from __future__ import annotations

import einops
import torch
from jaxtyping import Float
from transformer_lens import ActivationCache, HookedTransformer

from lit_interp.analysis.losses import Task, edited_losses

Scores = Float[torch.Tensor, "batch head query_pos key_pos"]

# direct: query and key both read the embeddings; k_comp: the key reads what earlier heads wrote;
# q_comp: the query does; kq_comp: both do. The four sum to the real scores.
TERMS = ("direct", "k_comp", "q_comp", "kq_comp")


def supports_term_importance(model: HookedTransformer) -> bool:
    """Scores split exactly into the four terms only when the residual stream reaches q and k linearly."""
    cfg = model.cfg
    return (
        cfg.attn_only
        and cfg.normalization_type is None
        and cfg.n_layers >= 2
        and cfg.positional_embedding_type in ("standard", "rotary")
        and cfg.attn_scores_soft_cap <= 0
        and not cfg.use_logn_attn
    )


def attention_score_terms(model: HookedTransformer, cache: ActivationCache, layer: int) -> dict[str, Scores]:
    """Split layer `layer`'s attention scores into TERMS; raises if they do not sum to the cached scores."""
    attn = model.blocks[layer].attn
    direct = cache["blocks.0.hook_resid_pre"]  # token (and positional) embeddings
    composed = cache["resid_pre", layer] - direct  # everything earlier attention layers wrote, b_O included

    def project(residual: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        out = einops.einsum(residual, W, "batch pos d_model, head d_model d_head -> batch pos head d_head")
        out = out if b is None else out + b
        # The rotation is linear, so rotating each part separately keeps the sum exact.
        return attn.apply_rotary(out) if model.cfg.positional_embedding_type == "rotary" else out

    # The biases sit in the direct parts: they reach q and k whatever the input.
    q_direct, q_composed = project(direct, attn.W_Q, attn.b_Q), project(composed, attn.W_Q, None)
    k_direct, k_composed = project(direct, attn.W_K, attn.b_K), project(composed, attn.W_K, None)

    def score(q: torch.Tensor, k: torch.Tensor) -> Scores:
        return einops.einsum(q, k, "batch qpos head d, batch kpos head d -> batch head qpos kpos") / attn.attn_scale

    terms = {
        "direct": score(q_direct, k_direct),
        "k_comp": score(q_direct, k_composed),
        "q_comp": score(q_composed, k_direct),
        "kq_comp": score(q_composed, k_composed),
    }
    _check_terms_sum(terms, cache["attn_scores", layer], layer)
    return terms


def _check_terms_sum(terms: dict[str, Scores], scores: Scores, layer: int) -> None:
    n = scores.shape[-1]
    causal = torch.ones(n, n, dtype=torch.bool, device=scores.device).tril()
    real = scores[..., causal]
    if not torch.isfinite(real).all():
        return  # a diverged model: its terms are NaN too, and there is nothing to check
    error = (sum(terms.values())[..., causal] - real).abs().max().item()
    tolerance = 1e-4 * (1.0 + real.abs().max().item())
    if not error <= tolerance:
        raise RuntimeError(
            f"layer {layer} attention-score terms {list(terms)} miss the real scores by up to {error:.3g} "
            f"(tolerance {tolerance:.3g}): the decomposition does not match this model's attention"
        )


def _remove_term(term: Scores, layer: int, model: HookedTransformer):
    def edit(scores: Scores) -> Scores:
        return model.blocks[layer].attn.apply_causal_mask(scores - term)

    return edit


def term_importance(
    model: HookedTransformer, task: Task, batch: torch.Tensor, cache: ActivationCache, layer: int
) -> tuple[dict[str, float], dict[str, Float[torch.Tensor, "head query_pos key_pos"]]]:
    """The task's loss with each term subtracted from layer `layer`'s scores, and each term's batch mean.

    `cache` must come from the clean run on `batch`. Mean terms are zero above the diagonal.
    """
    terms = attention_score_terms(model, cache, layer)
    hook_name = f"blocks.{layer}.attn.hook_attn_scores"
    edits = [(hook_name, _remove_term(term, layer, model)) for term in terms.values()]
    losses = dict(zip(terms, edited_losses(model, task, batch, edits, cache, start_at_layer=layer)))
    mean_terms = {name: term.mean(0).tril() for name, term in terms.items()}
    return losses, mean_terms
