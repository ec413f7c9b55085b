"""Activation patching (seed 003): clean activations patched into a corrupted run, scored 1 = clean, 0 = corrupted.

The scores are ratios over the clean-corrupted gap of the metric, so they are given only when that gap
stands clear of the metric's own noise (`within_noise`); otherwise they are NaN and the reason says why.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from jaxtyping import Float
from transformer_lens import ActivationCache, HookedTransformer, utils
from transformer_lens.patching import (
    layer_head_vector_patch_setter,
    layer_pos_patch_setter,
)

from lit_interp.analysis.losses import Task, is_token_task

Metric = Callable[[torch.Tensor], float]


def corrupt_previous(batch: torch.Tensor, bos_token: int | None, d_vocab: int) -> torch.Tensor:
    """The batch with the input the last position's answer comes from replaced (the token tasks' corruption).

    Token tasks predict the previous token: the token before the last position becomes the next
    ordinary id, so the last position's answer changes in every sequence. A vector task with no
    corruption of its own gets its last input vector replaced by the next sequence's.
    """
    corrupted = batch.clone()
    if is_token_task(batch):
        replaced = (batch[:, -2] + 1) % d_vocab
        if bos_token is not None:
            replaced = torch.where(replaced == bos_token, (replaced + 1) % d_vocab, replaced)
        corrupted[:, -2] = replaced
    else:
        last_input = batch.shape[1] - 2  # the model reads every vector but the final one
        corrupted[:, last_input] = batch.roll(1, dims=0)[:, last_input]
    return corrupted


def last_position_losses(task: Task, clean_batch: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Each sequence's loss at the last position against the clean answer: cross-entropy for tokens, MSE for vectors."""
    target = task.targets(clean_batch)[:, -1]

    def losses(output: torch.Tensor) -> torch.Tensor:
        last = output[:, -1].float()
        if target.is_floating_point():
            return (last - target).pow(2).mean(-1)
        return F.cross_entropy(last, target, reduction="none")

    return losses


def last_position_loss(task: Task, clean_batch: torch.Tensor) -> Metric:
    """The batch-mean loss at the last position against the clean answer: the metric every patch is scored by."""
    losses = last_position_losses(task, clean_batch)
    return lambda output: losses(output).mean().item()


def half_batch_difference(per_sequence: torch.Tensor) -> float:
    """The metric's noise: how far its mean over the first half of the batch is from its mean over the second."""
    half = len(per_sequence) // 2
    if half == 0:
        return float("nan")
    return (per_sequence[:half].mean() - per_sequence[half:].mean()).abs().item()


def within_noise(gap: float, noise: float) -> str | None:
    """Why a clean-corrupted gap cannot carry patching scores (they are ratios over it), or None if it can."""
    if gap > noise:  # False for NaN too
        return None
    return (
        f"the corruption moves the last-position loss by {gap:.3g}, not more than its noise {noise:.3g} (the clean "
        "loss's difference between the two halves of the probe batch): every patching score would be a ratio of noise"
    )


def _normalise(loss: torch.Tensor, clean: float, corrupted: float) -> torch.Tensor:
    return (corrupted - loss) / (corrupted - clean)


def patch_residual(
    model: HookedTransformer,
    metric: Metric,
    clean_cache: ActivationCache,
    corrupted_cache: ActivationCache,
    clean: float,
    corrupted: float,
) -> Float[torch.Tensor, "layer pos"]:
    """Normalised metric with the clean `resid_pre` of block l at one position patched into the corrupted run.

    Where the clean activation equals the corrupted one (every position before the corruption, in a
    causal model) the patched run is the corrupted run itself, which is computed once.
    """
    n_layers, n_pos = model.cfg.n_layers, clean_cache["resid_pre", 0].shape[1]
    unpatched = metric(model(corrupted_cache["resid_pre", 0], start_at_layer=0))
    losses = torch.full((n_layers, n_pos), unpatched)
    for layer in range(n_layers):
        name = utils.get_act_name("resid_pre", layer)
        for pos in range(n_pos):
            if torch.equal(clean_cache[name][:, pos], corrupted_cache[name][:, pos]):
                continue
            patched = layer_pos_patch_setter(corrupted_cache[name].clone(), (layer, pos), clean_cache[name])
            losses[layer, pos] = metric(model(patched, start_at_layer=layer))
    return _normalise(losses, clean, corrupted)


def patch_heads(
    model: HookedTransformer,
    metric: Metric,
    clean_cache: ActivationCache,
    corrupted_cache: ActivationCache,
    clean: float,
    corrupted: float,
) -> Float[torch.Tensor, "layer head"]:
    """Normalised metric with one head's clean output (`hook_z`, every position) patched into the corrupted run."""
    unpatched = metric(model(corrupted_cache["resid_pre", 0], start_at_layer=0))
    losses = torch.full((model.cfg.n_layers, model.cfg.n_heads), unpatched)
    for layer in range(model.cfg.n_layers):
        name = utils.get_act_name("z", layer)
        for head in range(model.cfg.n_heads):
            if torch.equal(clean_cache[name][:, :, head], corrupted_cache[name][:, :, head]):
                continue  # the patched run is the corrupted run

            def patch(z: torch.Tensor, hook, head: int = head, layer: int = layer, name: str = name) -> torch.Tensor:
                return layer_head_vector_patch_setter(z.clone(), (layer, head), clean_cache[name])

            residual = corrupted_cache["resid_pre", layer]
            losses[layer, head] = metric(
                model.run_with_hooks(residual, start_at_layer=layer, fwd_hooks=[(name, patch)])
            )
    return _normalise(losses, clean, corrupted)


def activation_patching(
    model: HookedTransformer,
    task: Task,
    batch: torch.Tensor,
    corrupted_batch: torch.Tensor,
    clean_cache: ActivationCache,
) -> tuple[dict[str, float | str], dict[str, torch.Tensor]]:
    """Patch the residual stream per block x position and each head's output into the run on `corrupted_batch`.

    Returns the metric's clean and corrupted values, their gap and the metric's noise, and the tensors
    `resid_pre_patching` and `head_patching`; when the gap does not exceed the noise, a `reason` instead
    of the tensors. Our own loop over TransformerLens's patch
    setters rather than `generic_activation_patch`: that one takes the position count from the input's
    last dimension (the vector size for vector inputs), reruns the whole model for each patch and draws a
    progress bar inside training; this one starts each patched run at the patched block, from the
    corrupted run's cache.
    """
    losses = last_position_losses(task, batch)
    corrupted_output, corrupted_cache = model.run_with_cache(task.model_input(corrupted_batch))
    clean_losses = losses(model(clean_cache["resid_pre", 0], start_at_layer=0))
    clean, corrupted = clean_losses.mean().item(), losses(corrupted_output).mean().item()
    summary: dict[str, float | str] = {
        "clean_last_position_loss": clean,
        "corrupted_last_position_loss": corrupted,
        "loss_gap": corrupted - clean,
        "loss_noise": half_batch_difference(clean_losses),
    }
    reason = within_noise(summary["loss_gap"], summary["loss_noise"])
    if reason is not None:
        return summary | {"reason": reason}, {}  # no patched run: the tensors are not computed
    metric = last_position_loss(task, batch)
    return summary, {
        "resid_pre_patching": patch_residual(model, metric, clean_cache, corrupted_cache, clean, corrupted),
        "head_patching": patch_heads(model, metric, clean_cache, corrupted_cache, clean, corrupted),
    }
