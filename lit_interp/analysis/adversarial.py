"""Adversarial inputs for token tasks (seed 001): repeated adjacent tokens, and BOS replaced by an ordinary token."""

from __future__ import annotations

import torch
from jaxtyping import Int
from transformer_lens import HookedTransformer

from lit_interp.analysis.losses import Task
from lit_interp.analysis.patterns import Patterns, mean_attention_patterns

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


def adversarial_inputs(tokens: Tokens, has_bos: bool) -> dict[str, Tokens]:
    """Repeated adjacent tokens and (BOS tasks) the tokens without BOS, by name."""
    inputs = {"repeated_tokens": repeated_adjacent_tokens(tokens, has_bos)}
    return inputs | ({"no_bos": replace_bos(tokens)} if has_bos else {})


def adversarial_analysis(
    model: HookedTransformer, task: Task, tokens: Tokens, has_bos: bool
) -> tuple[dict[str, float], dict[str, Patterns]]:
    """The task's loss `<name>_loss` on each adversarial input, and the mean attention patterns on each."""
    losses, patterns = {}, {}
    for name, inputs in adversarial_inputs(tokens, has_bos).items():
        output, cache = model.run_with_cache(
            task.model_input(inputs), names_filter=lambda hook: hook.endswith(("hook_pattern", "hook_attn_scores"))
        )
        losses[f"{name}_loss"] = task.loss(output, inputs).item()
        patterns[name] = mean_attention_patterns(cache, model.cfg.n_layers)
    return losses, patterns


def adversarial_losses(model: HookedTransformer, task: Task, tokens: Tokens, has_bos: bool) -> dict[str, float]:
    """The task's loss on the clean tokens, on repeated adjacent tokens, and (BOS tasks) without BOS."""
    clean = task.loss(model(task.model_input(tokens)), tokens).item()
    return {"clean_loss": clean} | adversarial_analysis(model, task, tokens, has_bos)[0]
