"""Interventions on weights (seed 002): edits applied to a copy of a model, never to the trained weights, and evaluated.

```python
from lit_interp.analysis import LowRankIdentityQK, ZeroHeadOutput, edited_losses, processed_copy
losses = edited_losses(processed_copy(model, center_unembed=False), task, batch, {
    "L0 but H7 zeroed": [ZeroHeadOutput(0, head) for head in range(7)],
    "L2H0-4 QK identity": [LowRankIdentityQK(2, head) for head in range(5)],
})
```
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

from lit_interp.analysis.losses import Task, residual_before
from lit_interp.errors import require


class WeightEdit(Protocol):
    """An edit of one head's weights, in place: `apply(model)` under no_grad, touching only `model.blocks[layer]`."""

    layer: int
    head: int

    def apply(self, model: HookedTransformer) -> None: ...


def _check_head(model: HookedTransformer, layer: int, head: int) -> None:
    cfg = model.cfg
    require(0 <= layer < cfg.n_layers, f"layer={layer} is outside the model's layers 0..{cfg.n_layers - 1}")
    require(0 <= head < cfg.n_heads, f"head={head} is outside the model's heads 0..{cfg.n_heads - 1}")


@dataclass(frozen=True)
class ZeroHeadOutput:
    """W_V and W_O of one head set to zero (seed 002): the head writes nothing (b_O, shared by the layer, stays).

    The same forward pass as zeroing the head's `hook_z`, so one such edit alone gives the head's
    `zero_ablation_loss`; several at once keep only the other heads.
    """

    layer: int
    head: int

    def apply(self, model: HookedTransformer) -> None:
        _check_head(model, self.layer, self.head)
        attn = model.blocks[self.layer].attn
        with torch.no_grad():
            attn.W_V[self.head] = 0.0
            attn.W_O[self.head] = 0.0


@dataclass(frozen=True)
class LowRankIdentityQK:
    """W_Q of one head replaced by a random [d_model d_head] matrix and W_K by its pseudo-inverse transposed (seed 002).

    Then W_QK = W_Q W_Q⁺ is the orthogonal projection onto W_Q's column space: a rank-d_head
    identity, so a query attends to the keys most like itself. W_Q's entries are uniform in
    [0, 1) as in the seed, drawn from a generator seeded with (`seed`, layer, head), so heads get
    different subspaces; b_Q and b_K stay as they are.
    """

    layer: int
    head: int
    seed: int = 0

    def apply(self, model: HookedTransformer) -> None:
        _check_head(model, self.layer, self.head)
        attn = model.blocks[self.layer].attn
        state = np.random.SeedSequence([self.seed, self.layer, self.head]).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)
        W_Q = torch.rand(model.cfg.d_model, model.cfg.d_head, generator=generator, dtype=torch.float64)
        with torch.no_grad():
            attn.W_Q[self.head] = W_Q.to(attn.W_Q)
            attn.W_K[self.head] = torch.linalg.pinv(W_Q).T.to(attn.W_K)


def edited_copy(model: HookedTransformer, edits: Sequence[WeightEdit]) -> HookedTransformer:
    """A deep copy of `model` (eval mode) with every edit applied in order; `model` is never touched."""
    edited = copy.deepcopy(model).eval()
    for edit in edits:
        edit.apply(edited)
    return edited


@contextmanager
def _applied(model: HookedTransformer, edits: Sequence[WeightEdit]) -> Iterator[HookedTransformer]:
    """The edits applied to `model` in place and undone after: for many edit sets on one private copy."""
    layers = sorted({edit.layer for edit in edits})
    for edit in edits:
        _check_head(model, edit.layer, edit.head)
    saved = {
        (layer, name): parameter.detach().clone()
        for layer in layers
        for name, parameter in model.blocks[layer].attn.named_parameters()
    }
    try:
        for edit in edits:
            edit.apply(model)
        yield model
    finally:
        with torch.no_grad():
            for (layer, name), value in saved.items():
                model.blocks[layer].attn.get_parameter(name).copy_(value)


def edited_losses(
    model: HookedTransformer,
    task: Task,
    batch: torch.Tensor,
    experiments: Mapping[str, Sequence[WeightEdit]],
    in_place: bool = False,
) -> dict[str, float]:
    """The task's loss on `batch` under each named list of edits, each applied alone to one copy of `model`.

    Each edited pass starts at the first edited block, from the unedited model's residual stream
    there: the blocks before it compute what they always do. Pass the processed copy
    (`processed_copy`) to edit the weights a circuit reading sees, as seed 002 does. `in_place=True`
    edits `model` itself and restores every edited block after each experiment, for a copy the
    caller already owns (a deep copy of a model costs more than a small model's forward pass).
    """
    private = model if in_place else copy.deepcopy(model).eval()
    n_layers = private.cfg.n_layers
    starts = {name: min((edit.layer for edit in edits), default=n_layers) for name, edits in experiments.items()}
    losses = {}
    with torch.no_grad():
        if any(starts.values()):  # some pass starts after block 0: it needs the unedited residual stream there
            _, clean = private.run_with_cache(
                task.model_input(batch), names_filter=lambda name: name.endswith(("hook_resid_pre", "hook_resid_post"))
            )
        for name, edits in experiments.items():
            start = starts[name]
            inputs = task.model_input(batch) if start == 0 else residual_before(clean, start, n_layers)
            with _applied(private, edits) as edited:
                output = edited(inputs, start_at_layer=start if start else None)
            losses[name] = task.loss(output, batch).item()
    return losses


def kept_head_losses(
    model: HookedTransformer,
    task: Task,
    batch: torch.Tensor,
    layers: Sequence[int] | None = None,
    in_place: bool = False,
) -> Float[torch.Tensor, "layer head"]:
    """Loss with every other head of the head's layer zeroed (`ZeroHeadOutput`): the head alone does its layer's job.

    One row per layer of `layers` (default: every layer). Seed 002 zeroes heads 0-6 of layer 0 and
    keeps head 7. With one head per layer this is the clean loss. `in_place` as for `edited_losses`.
    """
    layers = range(model.cfg.n_layers) if layers is None else layers
    heads = range(model.cfg.n_heads)
    experiments = {
        f"L{layer}H{head}": [ZeroHeadOutput(layer, other) for other in heads if other != head]
        for layer in layers
        for head in heads
    }
    losses = edited_losses(model, task, batch, experiments, in_place)
    return torch.tensor(list(losses.values())).reshape(len(layers), len(heads))


def qk_identity_losses(
    model: HookedTransformer,
    task: Task,
    batch: torch.Tensor,
    head_layers: Sequence[int] | None = None,
    seed: int = 0,
    in_place: bool = False,
) -> tuple[Float[torch.Tensor, "layer head"], Float[torch.Tensor, " layer"]]:
    """Loss with one head's QK replaced by a low-rank identity (`LowRankIdentityQK`), for each head of `head_layers`
    (default: every layer), and with every head of a layer at once, for every layer.

    Seed 002 replaces heads 0-4 of its last layer and keeps its loss: those heads attend to the
    vectors most like the query. With one head per layer the layer's edit is the head's, run once.
    `in_place` as for `edited_losses`.
    """
    layers, heads = range(model.cfg.n_layers), range(model.cfg.n_heads)
    head_layers = layers if head_layers is None else head_layers
    experiments: dict[str, list[WeightEdit]] = {
        f"L{layer}H{head}": [LowRankIdentityQK(layer, head, seed)] for layer in head_layers for head in heads
    }
    layer_name = (lambda layer: f"L{layer}H0") if len(heads) == 1 else (lambda layer: f"L{layer}")
    experiments |= {layer_name(layer): [LowRankIdentityQK(layer, head, seed) for head in heads] for layer in layers}
    losses = edited_losses(model, task, batch, experiments, in_place)
    by_head = torch.tensor([losses[f"L{layer}H{head}"] for layer in head_layers for head in heads])
    by_layer = torch.tensor([losses[layer_name(layer)] for layer in layers])
    return by_head.reshape(len(head_layers), len(heads)), by_layer
