"""`run_analysis`: every registered analysis that applies to a task module, on a probe batch, as (summary, tensors)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torchmetrics.functional import r2_score
from transformer_lens import HookedTransformer

from lit_interp.analysis.builtin import BUILTIN_ANALYSES
from lit_interp.analysis.losses import Task
from lit_interp.analysis.registry import Analysis, AnalysisContext, run_registered
from lit_interp.errors import require
from lit_interp.tasks.base import Stream, SyntheticDataModule, TaskModule

# The probe batch size of a snapshot or analysis when neither the caller nor the run says otherwise.
DEFAULT_PROBE_BATCH_SIZE = 256


def run_analysis(
    module: TaskModule,
    datamodule: SyntheticDataModule,
    step: int,
    probe_batch_size: int = DEFAULT_PROBE_BATCH_SIZE,
    probe_index: int = 0,
    hook_mean_ablation: bool = True,
    expensive: bool = True,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Analyse `module` on batch `probe_index` of `datamodule`'s probe stream, leaving training untouched.

    Runs in eval mode, under no_grad with autocast and TF32 off, in fp32 (on a float copy of the
    model if its weights are not fp32), on the module's device, and restores every submodule's
    train/eval mode. The probe batch comes from the datamodule's own seeded generator: the global
    RNG is never drawn. Runs every analysis of `BUILTIN_ANALYSES` and of `module.analyses()` that
    applies; `hook_mean_ablation=False` skips seed 004's per-hook sweep, `expensive=False` the costly ones
    (patching, backup heads, probes). Weight-based analyses read a processed copy (`processed_copy`).

    Returns (summary, tensors); docs/analysis.md lists every key. Tensors are fp32, CPU, contiguous,
    each its own storage.
    """
    require(probe_batch_size >= 1, f"probe_batch_size={probe_batch_size} must be >= 1")
    batch = datamodule.make_batch(Stream.PROBE, probe_index, probe_batch_size, device=module.device)
    analyses = BUILTIN_ANALYSES + list(getattr(module, "analyses", lambda: [])())
    with _read_only(module) as model:
        summary, tensors = analyze_batch(
            model, module, datamodule, batch, step, analyses, hook_mean_ablation, expensive
        )
    # copy=True: each per-head slice gets its own storage instead of keeping its whole stack alive.
    return summary, {
        name: tensor.detach().to("cpu", torch.float32, copy=True).contiguous() for name, tensor in tensors.items()
    }


def analyze_batch(
    model: HookedTransformer,
    task: Task,
    datamodule: Any,
    batch: torch.Tensor,
    step: int,
    analyses: list[Analysis],
    hook_mean_ablation: bool = True,
    expensive: bool = True,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The clean run, the summary's head (step, task, loss, metrics), then every analysis that applies."""
    output, cache = model.run_with_cache(task.model_input(batch))
    summary: dict[str, Any] = {
        "step": int(step),
        "task": type(task).__name__,
        "loss": task.loss(output, batch).item(),
        "metrics": _metrics(output, task.targets(batch), task.hparams.first_target_pos),
    }
    bos_token = getattr(datamodule, "bos_token", None)
    context = AnalysisContext(model, task, datamodule, batch, output, cache, bos_token, hook_mean_ablation)
    summary, tensors, _ = run_registered(analyses, context, summary, expensive)
    return summary, tensors


@contextmanager
def _read_only(module: torch.nn.Module) -> Iterator[HookedTransformer]:
    """Eval mode, no_grad, autocast and TF32 off; yields an fp32 model; restores each submodule's mode after."""
    modes = {submodule: submodule.training for submodule in module.modules()}
    precision = torch.get_float32_matmul_precision()
    module.eval()
    try:
        # TF32 rounds fp32 matmuls to 10 bits, enough to break exact checks such as the score-term sum.
        torch.set_float32_matmul_precision("highest")
        with torch.no_grad(), torch.autocast(module.device.type, enabled=False):
            model = module.model
            if any(parameter.dtype != torch.float32 for parameter in model.parameters()):
                model = copy.deepcopy(model).float()  # never cast the training weights in place
            yield model
    finally:
        torch.set_float32_matmul_precision(precision)
        for submodule, training in modes.items():
            submodule.training = training


def _metrics(output: torch.Tensor, targets: torch.Tensor, first_target_pos: int) -> dict[str, float]:
    predictions = output[:, first_target_pos:]
    if targets.is_floating_point():
        r2 = r2_score(predictions.flatten(0, 1), targets.flatten(0, 1), multioutput="variance_weighted")
        return {"r2": r2.item()}
    return {"acc": (predictions.argmax(-1) == targets).float().mean().item()}
