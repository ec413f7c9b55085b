"""The task's loss on a (possibly hooked) forward pass: what every ablation is compared against."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from transformer_lens import ActivationCache, HookedTransformer


class Task(Protocol):
    """What analysis needs from a task module (`TaskModule` satisfies it)."""

    hparams: Any  # needs `first_target_pos`

    def model_input(self, batch: torch.Tensor) -> torch.Tensor: ...

    def targets(self, batch: torch.Tensor) -> torch.Tensor: ...

    def loss(self, output: torch.Tensor, batch: torch.Tensor) -> torch.Tensor: ...


def task_loss(model: HookedTransformer, task: Task, batch: torch.Tensor, fwd_hooks: Sequence = ()) -> float:
    """The task's scalar loss on `batch` with `fwd_hooks` ([(hook name or filter, fn), ...]) applied."""
    output = model.run_with_hooks(task.model_input(batch), fwd_hooks=list(fwd_hooks))
    return task.loss(output, batch).item()


Edit = tuple[str, Callable[[torch.Tensor], torch.Tensor]]  # (hook name, new activation from the clean one)

# Tokens per forward pass shared by edited copies of the batch. A GPU is launch-bound at these sizes
# and runs dozens of edited copies in the time of one; a CPU is compute- and cache-bound and was
# measured fastest one copy at a time (0: one copy per pass). The cap bounds activation memory.
TOKENS_PER_PASS = {"cpu": 0}
DEFAULT_TOKENS_PER_PASS = 2**16


def edited_losses(
    model: HookedTransformer,
    task: Task,
    batch: torch.Tensor,
    edits: Sequence[Edit],
    clean_cache: ActivationCache | None = None,
    start_at_layer: int | None = None,
) -> list[float]:
    """The task's loss under each edit alone, one edit per copy of the batch, copies stacked along the batch.

    An edit sees only its own copy's activation, which is the clean one (no other edit touches that
    copy), so a batch mean inside an edit is the clean batch mean. With the clean run's cache the
    passes start at block `start_at_layer` (no edit may fire before it).
    """
    tokens_per_pass = TOKENS_PER_PASS.get(batch.device.type, DEFAULT_TOKENS_PER_PASS)
    copies_per_pass = max(1, tokens_per_pass // (batch.shape[0] * batch.shape[1]))
    losses: list[float] = []
    for first in range(0, len(edits), copies_per_pass):
        losses += _stacked_pass(model, task, batch, edits[first : first + copies_per_pass], clean_cache, start_at_layer)
    return losses


def _stacked_pass(
    model: HookedTransformer,
    task: Task,
    batch: torch.Tensor,
    edits: Sequence[Edit],
    clean_cache: ActivationCache | None,
    start_at_layer: int | None,
) -> list[float]:
    n_copies = len(edits)
    edits_by_hook = defaultdict(list)
    for copy, (name, edit) in enumerate(edits):
        edits_by_hook[name].append((copy, edit))

    def apply(copy_edits):
        def hook(activation: torch.Tensor, hook) -> torch.Tensor:
            copies = activation.unflatten(0, (n_copies, -1))  # a view: each edit rewrites its own copy in place
            for copy, edit in copy_edits:
                copies[copy] = edit(copies[copy])
            return activation

        return hook

    hooks = [(name, apply(copy_edits)) for name, copy_edits in edits_by_hook.items()]
    if clean_cache is None or start_at_layer is None:
        inputs, start_at_layer = task.model_input(batch), None
    else:
        inputs = residual_before(clean_cache, start_at_layer, model.cfg.n_layers)
    stacked = inputs.repeat(n_copies, *[1] * (inputs.ndim - 1))
    with torch.no_grad():  # the in-place edits are only legal without autograd
        output = model.run_with_hooks(stacked, start_at_layer=start_at_layer, fwd_hooks=hooks)
    return [task.loss(copy_output, batch).item() for copy_output in output.unflatten(0, (n_copies, -1))]


def residual_before(cache: ActivationCache, layer: int, n_layers: int) -> torch.Tensor:
    """The residual stream entering block `layer` (entering the final norm when layer == n_layers)."""
    return cache["resid_pre", layer] if layer < n_layers else cache["resid_post", n_layers - 1]


def first_layer_reached(hook_name: str, n_layers: int) -> int | None:
    """The block a hook fires in (n_layers after the last block); None for the embeddings, before block 0."""
    match = re.match(r"blocks\.(\d+)\.", hook_name)
    if match:
        return int(match.group(1))
    return n_layers if hook_name.startswith(("ln_final.", "unembed.")) else None


def is_token_task(batch: torch.Tensor) -> bool:
    """Token tasks feed integer ids; the recurrence task feeds real vectors."""
    return not batch.is_floating_point()
