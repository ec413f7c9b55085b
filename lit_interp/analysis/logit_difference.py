"""Seed 003's logit difference on token tasks: correct minus best incorrect logit, beside the loss for attribution,
top heads, patching and backup heads (naive prediction, ln_final scale ratio).

The metric is recomputed on every run (the best incorrect token of that run); attributions project
onto the direction W_U[:, correct] - W_U[:, best incorrect of the clean run], through ln_final's
cached scale, so on the clean run the components add up to the clean logit difference less the
unembedding bias.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from transformer_lens import ActivationCache, HookedTransformer

from lit_interp.analysis.attribution import project, run_with_top_head_zeroed, stack_head_results
from lit_interp.analysis.losses import Task
from lit_interp.analysis.patching import corrupt_previous, patch_heads, patch_residual

# A mean within this many standard errors of zero (or of another mean) is noise: no ratio of it is kept.
NOISE_STANDARD_ERRORS = 2.0
SHARE_THRESHOLD = 0.02  # seed 003's threshold on a head's share of the clean logit difference
TOP_N = 12  # seed 003 sums the top 12 heads' shares


def logit_difference(
    logits: Float[torch.Tensor, "*batch d_vocab"], targets: Int[torch.Tensor, "*batch"]
) -> Float[torch.Tensor, "*batch"]:
    """The correct logit minus the largest other logit: > 0 exactly where the prediction is right."""
    logits = logits.float()
    correct = logits.gather(-1, targets[..., None])[..., 0]
    return correct - logits.scatter(-1, targets[..., None], float("-inf")).amax(-1)


def best_incorrect(logits: Float[torch.Tensor, "*batch d_vocab"], targets: Int[torch.Tensor, "*batch"]):
    """The token with the largest logit other than the target."""
    return logits.float().scatter(-1, targets[..., None], float("-inf")).argmax(-1)


def noise_reason(values: torch.Tensor, name: str) -> str | None:
    """Why the mean of `values` cannot be divided by: too few, not finite, or within NOISE_STANDARD_ERRORS of 0."""
    values = values.flatten().double()
    if len(values) < 2:
        return f"{name}: fewer than 2 values"
    if not torch.isfinite(values).all():
        return f"{name}: not finite"
    mean, error = values.mean().item(), values.std().item() / math.sqrt(len(values))
    if abs(mean) <= NOISE_STANDARD_ERRORS * error:
        return f"{name} {mean:.3g} is within {NOISE_STANDARD_ERRORS:g} standard errors ({error:.3g}) of 0"
    return None


def head_logit_difference_attribution(
    cache: ActivationCache,
    W_U: Float[torch.Tensor, "d_model d_vocab"],
    targets: Int[torch.Tensor, "batch target_pos"],
    incorrect: Int[torch.Tensor, "batch target_pos"],
    first_target_pos: int,
) -> Float[torch.Tensor, "layer head"]:
    """Each head's direct effect on the logit difference (targets vs `incorrect`), batch and target-position mean.

    Head outputs (without b_O) through ln_final's cached scale, onto W_U[:, target] - W_U[:, incorrect].
    `W_U` must carry ln_final's weight: pass `processed_copy(model).W_U`.
    """
    cfg = cache.model.cfg
    stack = cache.apply_ln_to_stack(
        stack_head_results(cache, first_target_pos), pos_slice=slice(first_target_pos, None)
    )
    W_U_rows = W_U.T  # d_vocab d_model: gathering rows keeps the direction contiguous (several times faster)
    direction = W_U_rows[targets] - W_U_rows[incorrect]  # batch pos d_model
    return project(stack, direction).mean(-1).reshape(cfg.n_layers, cfg.n_heads)


def top_head_shares(attribution: Float[torch.Tensor, "layer head"], clean: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Each head's attribution over the clean logit difference, and seed 003's sums of the top shares.

    `clean` holds the clean logit difference per (sequence, target position). Returns the shares
    [layer head] and {clean_logit_difference, share_above_threshold (sum of the shares >=
    SHARE_THRESHOLD), n_heads_above_threshold, top_heads_share (sum of the TOP_N largest)}; shares and
    sums are NaN, with `reason`, when the clean logit difference is within noise of 0.
    """
    clean_mean = clean.float().mean().item()
    summary: dict = {"clean_logit_difference": clean_mean, "threshold": SHARE_THRESHOLD}
    reason = noise_reason(clean, "clean logit difference")
    if reason:
        shares = torch.full_like(attribution, torch.nan)
        return shares, summary | {
            "share_above_threshold": math.nan,
            "n_heads_above_threshold": math.nan,
            "top_heads_share": math.nan,
            "reason": reason,
        }
    shares = attribution / clean_mean
    above = shares >= SHARE_THRESHOLD
    return shares, summary | {
        "share_above_threshold": shares[above].sum().item(),
        "n_heads_above_threshold": int(above.sum()),
        "top_heads_share": shares.flatten().topk(min(TOP_N, shares.numel())).values.sum().item(),
    }


def logit_difference_patching(
    model: HookedTransformer,
    task: Task,
    batch: torch.Tensor,
    clean_output: torch.Tensor,
    clean_cache: ActivationCache,
    bos_token: int | None,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Activation patching scored by the last position's logit difference (1 = clean, 0 = corrupted), seed 003's metric.

    The same corruption and patches as `patching.activation_patching` (`corrupt_previous`). The
    scores are NaN, with `reason`, when the clean-corrupted gap is within NOISE_STANDARD_ERRORS
    standard errors of the per-sequence gaps.
    """
    target = task.targets(batch)[:, -1]

    def metric(output: torch.Tensor) -> float:
        return logit_difference(output[:, -1], target).mean().item()

    corrupted_batch = corrupt_previous(batch, bos_token, model.cfg.d_vocab)
    corrupted_output, corrupted_cache = model.run_with_cache(  # what the patch functions read, nothing more
        task.model_input(corrupted_batch), names_filter=lambda name: name.endswith(("hook_resid_pre", "hook_z"))
    )
    clean_values = logit_difference(clean_output[:, -1], target)
    corrupted_values = logit_difference(corrupted_output[:, -1], target)
    clean, corrupted = clean_values.mean().item(), corrupted_values.mean().item()
    summary = {"clean_logit_difference": clean, "corrupted_logit_difference": corrupted}
    reason = noise_reason(clean_values - corrupted_values, "clean - corrupted logit difference")
    cfg = model.cfg
    if reason:
        nan = torch.full((cfg.n_layers, cfg.n_heads), torch.nan)
        return summary | {"reason": reason}, {
            "resid_pre_patching_logit_difference": torch.full((cfg.n_layers, batch.shape[1]), torch.nan),
            "head_patching_logit_difference": nan,
        }
    return summary, {
        "resid_pre_patching_logit_difference": patch_residual(
            model, metric, clean_cache, corrupted_cache, clean, corrupted
        ),
        "head_patching_logit_difference": patch_heads(model, metric, clean_cache, corrupted_cache, clean, corrupted),
    }


def backup_against_naive(
    model: HookedTransformer,
    task: Task,
    batch: torch.Tensor,
    clean_output: torch.Tensor,
    clean_cache: ActivationCache,
    W_U: Float[torch.Tensor, "d_model d_vocab"],
) -> tuple[dict, Float[torch.Tensor, "layer head"]]:
    """Seed 003's backup check: zero the head with the largest logit-difference attribution and compare.

    The naive prediction of the ablated logit difference is the clean one less the head's direct
    attribution; the ablated run's own logit difference above it is what other heads made up. Also
    the mean ratio of ln_final's scale, clean over ablated (models with a final norm), and each
    head's change in attribution (ablated minus clean, each run through its own scale). The head is
    zeroed at every position (`hook_z`), as `attribution.backup_heads` does.
    """
    first = task.hparams.first_target_pos
    targets = task.targets(batch)
    incorrect = best_incorrect(clean_output[:, first:], targets)
    clean = head_logit_difference_attribution(clean_cache, W_U, targets, incorrect, first)
    (layer, head), output, ablated_cache = run_with_top_head_zeroed(model, task, batch, clean)
    ablated = head_logit_difference_attribution(ablated_cache, W_U, targets, incorrect, first)
    clean_logit_difference = logit_difference(clean_output[:, first:], targets).mean().item()
    summary = {
        "ablated_layer": layer,
        "ablated_head": head,
        "clean_logit_difference": clean_logit_difference,
        "ablated_logit_difference": logit_difference(output[:, first:], targets).mean().item(),
        "naive_prediction": clean_logit_difference - clean[layer, head].item(),
    }
    if "ln_final.hook_scale" in clean_cache.cache_dict:
        ratio = clean_cache["ln_final.hook_scale"][:, first:] / ablated_cache["ln_final.hook_scale"][:, first:]
        summary["ln_final_scale_ratio"] = ratio.mean().item()
    return summary, ablated - clean
