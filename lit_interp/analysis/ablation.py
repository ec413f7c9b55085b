"""Ablation losses: each head's hook_z zeroed or batch-meaned (seeds 002, 003), and seed 004's sweep over every hook."""

from __future__ import annotations

from typing import Literal

import torch
from jaxtyping import Float
from transformer_lens import ActivationCache, HookedTransformer

from lit_interp.analysis.losses import Task, edited_losses, first_layer_reached

# A batch mean of the positional embedding is the positional embedding itself (seed 004 skips it too).
SWEEP_SKIPS = ("hook_pos_embed",)


def _ablate_head(head: int, mode: Literal["zero", "mean"]):
    def edit(z: Float[torch.Tensor, "batch pos head_index d_head"]) -> torch.Tensor:
        z = z.clone()
        z[:, :, head] = 0.0 if mode == "zero" else z[:, :, head].mean(0, keepdim=True)
        return z

    return edit


def head_ablation_losses(
    model: HookedTransformer,
    task: Task,
    batch: torch.Tensor,
    mode: Literal["zero", "mean"],
    clean_cache: ActivationCache | None = None,
) -> Float[torch.Tensor, "layer head"]:
    """The task's loss with one head's `hook_z` zeroed (or replaced by its batch mean per position), for every head.

    With the clean run's cache, each ablated pass starts at the ablated head's block (same numbers, less work).
    """
    losses = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        edits = [(f"blocks.{layer}.attn.hook_z", _ablate_head(head, mode)) for head in range(model.cfg.n_heads)]
        losses[layer] = torch.tensor(edited_losses(model, task, batch, edits, clean_cache, start_at_layer=layer))
    return losses


def _batch_mean(activation: torch.Tensor) -> torch.Tensor:
    return activation.mean(0, keepdim=True).expand_as(activation)


def sweep_hook_names(model: HookedTransformer, task: Task, batch: torch.Tensor) -> list[str]:
    """Every hook the clean forward pass fires, in forward order, less those a batch mean leaves unchanged."""
    names: list[str] = []
    hooks = [(lambda name: not name.endswith(SWEEP_SKIPS), lambda activation, hook: names.append(hook.name))]
    model.run_with_hooks(task.model_input(batch), fwd_hooks=hooks)
    return names


def hook_mean_ablation_losses(
    model: HookedTransformer, task: Task, batch: torch.Tensor, clean_cache: ActivationCache | None = None
) -> dict[str, float]:
    """Seed 004's sweep: the loss with one hook's activation replaced by its batch mean, one hook at a time.

    With the clean run's cache, the hooks of each block share passes that start at that block.
    """
    names = sweep_hook_names(model, task, batch)
    names_by_layer: dict[int | None, list[str]] = {}
    for name in names:
        names_by_layer.setdefault(first_layer_reached(name, model.cfg.n_layers), []).append(name)
    losses = {}
    for layer, layer_names in names_by_layer.items():
        edits = [(name, _batch_mean) for name in layer_names]
        losses |= dict(zip(layer_names, edited_losses(model, task, batch, edits, clean_cache, start_at_layer=layer)))
    return {name: losses[name] for name in names}  # forward order
