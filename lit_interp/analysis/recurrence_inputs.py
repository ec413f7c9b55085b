"""Recurrences built with a chosen c or length (seed 002): loss by signed c on a grid, by sequence length, and
attention split by the sign of c.

Sequences come from the task's own DataModule (`generate`, so the normalisation is the task's), on a
copy whose coefficient bounds or length are pinned, with a generator seeded here: the same initial
vectors, constants and caps at every grid point, only c (or the length) changes.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

from lit_interp.analysis.losses import Task

GRID_SEED = 0
# Seed 002's grid runs from -4 to 4 in steps of 0.1 (100 sequences each); coarser here, ends included.
C_GRID = torch.linspace(-4.0, 4.0, 17)
SEQUENCES_PER_POINT = 16


def recurrences(datamodule: Any, n_sequences: int, c: float | None = None, seq_len: int | None = None) -> torch.Tensor:
    """`n_sequences` from the DataModule's own `generate`, every c_k equal to `c` and/or `seq_len` vectors long."""
    pinned = copy.copy(datamodule)  # a shallow copy: the task's DataModule keeps its bounds and length
    if c is not None:
        pinned.coefficient_bounds = (float(c), float(c))
    if seq_len is not None:
        pinned.seq_len = seq_len
    return pinned.generate(torch.Generator().manual_seed(GRID_SEED), n_sequences)


def per_sequence_losses(task: Task, output: torch.Tensor, batch: torch.Tensor) -> Float[torch.Tensor, " batch"]:
    """The task's loss on each sequence alone: their mean is the batch loss, their spread its noise."""
    return torch.tensor(
        [task.loss(output[index : index + 1], batch[index : index + 1]).item() for index in range(len(batch))]
    )


def mean_and_standard_error(losses: torch.Tensor) -> tuple[float, float]:
    return losses.mean().item(), (losses.std() / len(losses) ** 0.5).item()


def loss_by_coefficient(
    model: HookedTransformer,
    task: Task,
    datamodule: Any,
    grid: torch.Tensor = C_GRID,
    n_sequences: int = SEQUENCES_PER_POINT,
) -> tuple[Float[torch.Tensor, " c"], Float[torch.Tensor, " c"]]:
    """The task's loss on `n_sequences` recurrences with every c_k = c, for each c of `grid` (one forward pass),
    and its standard error over the sequences.

    The grid reaches outside the training bounds (`coefficient_bounds`) on purpose: seed 002 asks
    how the model extrapolates. Differences within a few standard errors are noise.
    """
    device = model.W_E.device
    batches = torch.stack([recurrences(datamodule, n_sequences, c=c) for c in grid.tolist()]).to(device)
    outputs = model(task.model_input(batches.flatten(0, 1))).unflatten(0, batches.shape[:2])
    points = [mean_and_standard_error(per_sequence_losses(task, *pair)) for pair in zip(outputs, batches)]
    return torch.tensor([mean for mean, _ in points]), torch.tensor([error for _, error in points])


def loss_by_sequence_length(
    model: HookedTransformer, task: Task, datamodule: Any, n_sequences: int = SEQUENCES_PER_POINT
) -> dict[int, tuple[float, float]]:
    """The task's loss (and its standard error over sequences) on recurrences of each length, from the shortest
    with a target to the task's own.

    A causal model reads a prefix exactly as it reads the start of a longer sequence; what changes
    is the data: each sequence is normalised by its own largest norm (seed 002 tries length 5).
    """
    first = task.hparams.first_target_pos
    losses = {}
    for seq_len in range(first + 2, datamodule.seq_len + 1):  # the model reads seq_len - 1 vectors
        batch = recurrences(datamodule, n_sequences, seq_len=seq_len).to(model.W_E.device)
        losses[seq_len] = mean_and_standard_error(per_sequence_losses(task, model(task.model_input(batch)), batch))
    return losses


def attention_by_sign(
    patterns: Float[torch.Tensor, "batch layer head query_pos key_pos"], coefficient: Float[torch.Tensor, " batch"]
) -> Float[torch.Tensor, "sign layer head query_pos key_pos"]:
    """Mean attention patterns of the sequences with c < 0 (index 0) and c > 0 (index 1); NaN for an empty side."""
    sides = [coefficient < 0, coefficient > 0]
    return torch.stack(
        [
            patterns[side].mean(0) if side.any() else torch.full(patterns.shape[1:], torch.nan, device=patterns.device)
            for side in sides
        ]
    )
