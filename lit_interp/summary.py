"""The end of a run: final metrics to `final_metrics.json` and to TensorBoard's hparams tab with the hyperparameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lit_interp.files import write_json

# Hyperparameters shown in the hparams tab: the ones that distinguish runs of a task.
KEY_HPARAMS = (
    "n_layers",
    "d_model",
    "n_heads",
    "d_head",
    "d_mlp",
    "attn_only",
    "normalization_type",
    "lr",
    "weight_decay",
    "warmup_steps",
    "decay_steps",
    "batch_size",
    "seed",
    "n_ctx",
    "d_vocab",
    "order",
    "p",
    "train_fraction",
)


def final_metrics(trainer: pl.Trainer) -> dict[str, float]:
    return {
        name: float(value)
        for name, value in trainer.callback_metrics.items()
        if getattr(value, "numel", lambda: 1)() == 1
    }


def hparams_entry(
    module: pl.LightningModule, datamodule: pl.LightningDataModule | None, seed: int | None = None
) -> dict[str, Any]:
    params: dict[str, Any] = {"task": type(module).__name__, "seed_everything": seed}
    for prefix, source in (("model", module), ("data", datamodule)):
        for key, value in dict(getattr(source, "hparams", {}) or {}).items():
            if key in KEY_HPARAMS and isinstance(value, (int, float, str, bool)):
                params[f"{prefix}/{key}"] = value
    return {key: value for key, value in params.items() if value is not None}


class RunSummary(Callback):
    """At the end of training, before Lightning closes the loggers: the run's final metrics and hparams entry."""

    def __init__(self, run_dir: Path | None = None, seed: int | bool | None = None):
        super().__init__()
        self.run_dir = run_dir
        self.seed = (
            seed if isinstance(seed, int) and not isinstance(seed, bool) else None
        )  # the one seed_everything used

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.fast_dev_run:  # rank 0 only: nothing here is a collective
            log_run_summary(trainer, pl_module, trainer.datamodule, self.run_dir, self.seed)


def log_run_summary(
    trainer: pl.Trainer, module: pl.LightningModule, datamodule, run_dir: Path | None, seed: int | None = None
) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger

    metrics = final_metrics(trainer)
    if run_dir is not None and run_dir.is_dir():
        record = {"step": trainer.global_step, "task": type(module).__name__, "metrics": metrics}
        write_json(run_dir / "final_metrics.json", record)
    params = hparams_entry(module, datamodule, seed)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics={f"final/{name}": value for name, value in metrics.items()})
