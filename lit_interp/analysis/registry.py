"""The analysis registry: each analysis a record saying where it applies, run on a shared per-snapshot context."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from transformer_lens import ActivationCache, HookedTransformer

from lit_interp.analysis.losses import Task, is_token_task
from lit_interp.analysis.weights import processed_view
from lit_interp.heads import head_label

Summary = dict[str, Any]
Tensors = dict[str, torch.Tensor]


@dataclass
class AnalysisContext:
    """What every analysis of one snapshot shares: the model, its probe batch, the clean run and the processed copy.

    `model` runs the real forward pass (fp32, eval, no_grad); `processed` is built on first use, once.
    """

    model: HookedTransformer
    task: Task
    datamodule: Any
    batch: torch.Tensor
    output: torch.Tensor
    cache: ActivationCache
    bos_token: int | None = None
    hook_mean_ablation: bool = True
    memo: dict[str, Any] = field(default_factory=dict)  # intermediate results analyses share within one snapshot

    @cached_property
    def processed(self) -> HookedTransformer:
        """LayerNorm folded, writing weights centred, unembedding centred for token tasks only (`processed_copy`),
        refilled in place from the model's current weights at each snapshot (`processed_view`)."""
        return processed_view(self.model, center_unembed=self.token_task)

    @property
    def token_task(self) -> bool:
        return is_token_task(self.batch)

    @property
    def has_bos(self) -> bool:
        return self.bos_token is not None

    @property
    def first_target_pos(self) -> int:
        return self.task.hparams.first_target_pos

    @cached_property
    def targets(self) -> torch.Tensor:
        return self.task.targets(self.batch)


@dataclass(frozen=True)
class Analysis:
    """One analysis: `run(context) -> (summary fragment, tensors)`, run when `applies(context)`.

    Fragments merge into the snapshot summary: per-head floats under `{"heads": {"L0H0": {name: x}}}`,
    per-layer floats under `{"layers": {"0": {name: x}}}`, anything else as its own section.
    `expensive` analyses run only when the caller asks for them (every k-th snapshot, and in analyze).
    """

    name: str
    run: Callable[[AnalysisContext], tuple[Summary, Tensors]]
    applies: Callable[[AnalysisContext], bool] = field(default=lambda context: True)
    expensive: bool = False


def head_fragment(scores: dict[str, torch.Tensor]) -> Summary:
    """`{"heads": {"L{l}H{h}": {name: float}}}` from [layer head] tensors."""
    heads: dict[str, dict[str, float]] = {}
    for name, values in scores.items():
        for (layer, head), value in zip(
            torch.cartesian_prod(*map(torch.arange, values.shape)).tolist(), values.flatten().tolist()
        ):
            heads.setdefault(head_label(layer, head), {})[name] = value
    return {"heads": heads}


def layer_fragment(values: dict[str, torch.Tensor | list[float]]) -> Summary:
    """`{"layers": {"{l}": {name: float}}}` from per-layer sequences."""
    layers: dict[str, dict[str, float]] = {}
    for name, per_layer in values.items():
        for layer, value in enumerate(torch.as_tensor(per_layer).tolist()):
            layers.setdefault(str(layer), {})[name] = value
    return {"layers": layers}


def per_head(prefix: str, tensor: torch.Tensor) -> Tensors:
    """`prefix.L{layer}H{head}` -> tensor[layer, head]: one matrix per head, as a report plots them."""
    return {
        f"{prefix}.{head_label(layer, head)}": tensor[layer, head]
        for layer in range(tensor.shape[0])
        for head in range(tensor.shape[1])
    }


def merge(summary: Summary, fragment: Summary) -> Summary:
    """Merge `fragment` into `summary` in place, dicts recursively; a repeated leaf is a bug in the registry."""
    for key, value in fragment.items():
        if isinstance(value, dict) and isinstance(summary.get(key), dict):
            merge(summary[key], value)
        elif key in summary:
            raise KeyError(f"two analyses write summary key {key!r}; give one of them another name")
        else:
            summary[key] = value
    return summary


def run_registered(
    analyses: list[Analysis], context: AnalysisContext, summary: Summary, expensive: bool
) -> tuple[Summary, Tensors, list[str]]:
    """Run every analysis that applies (the expensive ones only when asked), merging its results; also the names run."""
    tensors: Tensors = {}
    ran = []
    for analysis in analyses:
        if (analysis.expensive and not expensive) or not analysis.applies(context):
            continue
        fragment, new_tensors = analysis.run(context)
        merge(summary, fragment)
        clash = set(tensors) & set(new_tensors)
        if clash:
            raise KeyError(f"analysis {analysis.name!r} writes tensors {sorted(clash)} that another already wrote")
        tensors |= new_tensors
        ran.append(analysis.name)
    return summary, tensors, ran
