"""Adversarial inputs for token tasks (seed 001): repeated adjacent tokens, and BOS replaced by an ordinary token."""

from __future__ import annotations

import torch
from jaxtyping import Int
from transformer_lens import HookedTransformer

from lit_interp.analysis.losses import Task, task_loss

Tokens = Int[torch.Tensor, "batch pos"]


def repeated_adjacent_tokens(tokens: Tokens, has_bos: bool) -> Tokens:
    """`[BOS,] a, a, b, b, c, …` built from each sequence's own tokens, so every token sits beside its copy."""
    start = int(has_bos)
    n_ordinary = tokens.shape[1] - start
    source = start + torch.arange(n_ordinary, device=tokens.device) // 2
    return torch.cat([tokens[:, :start], tokens[:, source]], dim=1)


def replace_bos(tokens: Tokens) -> Tokens:
    """Position 0 (BOS) replaced by an ordinary token: the first ordinary token of the next sequence in the batch.

    Borrowing from the batch keeps the replacement uniform over ordinary tokens without a random generator.
    """
    replaced = tokens.clone()
    replaced[:, 0] = tokens.roll(-1, dims=0)[:, 1]
    return replaced


def adversarial_losses(model: HookedTransformer, task: Task, tokens: Tokens, has_bos: bool) -> dict[str, float]:
    """The task's loss on the clean tokens, on repeated adjacent tokens, and (BOS tasks) without BOS."""
    losses = {
        "clean_loss": task_loss(model, task, tokens),
        "repeated_tokens_loss": task_loss(model, task, repeated_adjacent_tokens(tokens, has_bos)),
    }
    if has_bos:
        losses["no_bos_loss"] = task_loss(model, task, replace_bos(tokens))
    return losses
