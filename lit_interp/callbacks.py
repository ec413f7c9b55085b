"""AnalysisSnapshots: run the analysis at checkpoint steps, write JSON + safetensors, log to TensorBoard.
ThrottledProgressBar: Lightning's progress bar, redrawn a few times a second instead of every step."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from lit_interp.errors import require

HEAD_SCALARS = ("prev_token_score", "bos_score", "duplicate_score", "induction_score", "zero_ablation_loss", "mean_ablation_loss", "direct_attribution")


def snapshot_path(log_dir: str | Path, step: int, suffix: str) -> Path:
    return Path(log_dir) / "analysis" / f"step_{step:07d}{suffix}"


def write_snapshot(log_dir: str | Path, step: int, summary: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write step_<step>.safetensors then step_<step>.json, each atomically; the JSON marks the snapshot done."""
    from safetensors.torch import save_file

    json_path = snapshot_path(log_dir, step, ".json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tensor_path = snapshot_path(log_dir, step, ".safetensors")
    save_file({name: tensor.detach().cpu().contiguous().clone() for name, tensor in tensors.items()}, f"{tensor_path}.tmp")
    os.replace(f"{tensor_path}.tmp", tensor_path)
    json_path.with_suffix(".json.tmp").write_text(json.dumps(summary, indent=1))
    os.replace(json_path.with_suffix(".json.tmp"), json_path)
    return json_path


def log_scalars(experiment, summary: dict[str, Any], step: int) -> None:
    """TensorBoard scalars `analysis/<score>/<head>`, so one chart per score shows every head."""
    experiment.add_scalar("analysis/loss", summary["loss"], step)
    for name, value in summary.get("metrics", {}).items():
        experiment.add_scalar(f"analysis/metrics/{name}", value, step)
    for head, scores in summary.get("heads", {}).items():
        for name in HEAD_SCALARS:
            if name in scores:
                experiment.add_scalar(f"analysis/{name}/{head}", scores[name], step)
    for hook, scores in summary.get("hooks", {}).items():
        experiment.add_scalar(f"analysis/hook_mean_ablation_loss/{hook}", scores["mean_ablation_loss"], step)
    for name, value in summary.get("adversarial", {}).items():
        experiment.add_scalar(f"analysis/adversarial/{name}", value, step)


def log_images(experiment, tensors: dict[str, torch.Tensor], step: int) -> None:
    """Attention patterns (one image per layer, heads left to right) and each head's OV circuit (rows: source token)."""
    from lit_interp import plots

    for layer, patterns in enumerate(tensors.get("attention_patterns", [])):
        experiment.add_image(f"analysis/attention_pattern/L{layer}", plots.heatmap_rgb(list(patterns)), step, dataformats="HWC")
    for name, circuit in tensors.items():
        if name.startswith("ov_circuit.") and circuit.ndim == 2:
            experiment.add_image(f"analysis/ov_circuit/{name.split('.', 1)[1]}", plots.heatmap_rgb([circuit]), step, dataformats="HWC")


class AnalysisSnapshots(Callback):
    """Runs `run_analysis` on rank 0 where the trainer writes a checkpoint and at the end of training.

    Snapshots go to `<log_dir>/analysis/step_<global_step:07d>.{json,safetensors}`; a step whose
    JSON already exists is skipped, so a resumed run neither repeats nor loses a snapshot.
    """

    def __init__(
        self,
        every_n_train_steps: int | None = None,
        probe_batch_size: int = 256,
        sweep_hooks: bool = True,
        sweep_every_n_snapshots: int = 1,
        log_images: bool = True,
        images_every_n_snapshots: int = 1,
    ):
        super().__init__()
        require(every_n_train_steps is None or every_n_train_steps >= 1, f"every_n_train_steps={every_n_train_steps} must be >= 1; or null to follow the checkpoint cadence")
        require(probe_batch_size >= 1, f"probe_batch_size={probe_batch_size} must be >= 1")
        require(sweep_every_n_snapshots >= 1, f"sweep_every_n_snapshots={sweep_every_n_snapshots} must be >= 1; use sweep_hooks: false to never sweep")
        require(images_every_n_snapshots >= 1, f"images_every_n_snapshots={images_every_n_snapshots} must be >= 1; use log_images: false for no images")
        self.every_n_train_steps = every_n_train_steps
        self.probe_batch_size = probe_batch_size
        self.sweep_hooks = sweep_hooks
        self.sweep_every_n_snapshots = sweep_every_n_snapshots
        self.log_images = log_images
        self.images_every_n_snapshots = images_every_n_snapshots

    def cadence(self, trainer: pl.Trainer) -> int | None:
        """Our own every_n_train_steps, else that of the trainer's step-based ModelCheckpoint."""
        if self.every_n_train_steps is not None:
            return self.every_n_train_steps
        steps = [c._every_n_train_steps for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c._every_n_train_steps >= 1]
        return min(steps) if steps else None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Runs before ModelCheckpoint's hook (Lightning orders checkpoint callbacks last), on the
        # same weights that checkpoint then saves.
        every = self.cadence(trainer)
        if every and trainer.global_step % every == 0 and not trainer.fit_loop._should_accumulate():
            self.snapshot(trainer, pl_module, final=trainer.global_step == trainer.max_steps)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.snapshot(trainer, pl_module, final=True)

    def is_kth(self, trainer: pl.Trainer, k: int, final: bool) -> bool:
        """Every k-th periodic snapshot, and always the last one of training (so it is complete)."""
        return final or (trainer.global_step // (self.cadence(trainer) or trainer.global_step)) % k == 0

    def snapshot(self, trainer: pl.Trainer, pl_module: pl.LightningModule, final: bool) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or trainer.sanity_checking or trainer.fast_dev_run or step == 0:
            return
        log_dir = trainer.log_dir or trainer.default_root_dir
        if snapshot_path(log_dir, step, ".json").exists():
            return  # written before an interruption, or a periodic snapshot at the final step
        from lit_interp.analysis.snapshot import run_analysis

        sweep = self.sweep_hooks and self.is_kth(trainer, self.sweep_every_n_snapshots, final)
        summary, tensors = run_analysis(pl_module, trainer.datamodule, step, probe_batch_size=self.probe_batch_size, probe_index=0, sweep_hooks=sweep)
        write_snapshot(log_dir, step, summary, tensors)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                log_scalars(logger.experiment, summary, step)
                if self.log_images and self.is_kth(trainer, self.images_every_n_snapshots, final):
                    log_images(logger.experiment, tensors, step)


class ThrottledProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, redrawn at most every `min_interval_s` seconds and at the end.

    Lightning's bar redraws on every step (`refresh_rate=1`), about 1 ms each: 5-10% of a
    20-60 ms CPU step of these models (docs/benchmarks.md). The CLI uses this one unless
    the config brings its own progress bar or turns it off.
    """

    def __init__(self, min_interval_s: float = 0.25, leave: bool = False):
        super().__init__(refresh_rate=1, leave=leave)
        require(min_interval_s >= 0, f"min_interval_s={min_interval_s} must be >= 0")
        self.min_interval_s = min_interval_s
        self._last_draw = float("-inf")

    def _should_update(self, current: int, total: int) -> bool:
        if not super()._should_update(current, total):
            return False
        now = time.monotonic()
        if current == total or now - self._last_draw >= self.min_interval_s:
            self._last_draw = now
            return True
        return False
