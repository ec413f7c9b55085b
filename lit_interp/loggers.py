"""Analysis results to any Lightning logger: scalars through `log_metrics`, images to those that take images."""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from lightning.pytorch.loggers import Logger

from lit_interp.heads import layer_label

# Section entries that describe how a measurement was taken (set sizes, fold counts), not a measurement to chart.
BOOKKEEPING = ("analysis/probes/sequences", "analysis/probes/folds", "analysis/probes/features")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_number_or_null(value: Any) -> bool:
    """A number, or null: the snapshot JSON's NaN (and infinities), which a resumed run reads back and logs again."""
    return value is None or _is_number(value)


def flatten_scalars(summary: dict[str, Any]) -> dict[str, float]:
    """Every number of a snapshot summary as `analysis/...` scalars, grouped so that one chart shows one
    score for every head (`analysis/<score>/L0H1`), layer (`analysis/<name>/L1`) or hook.

    A null (how the snapshot JSON stores NaN) is NaN: a resumed run relogging a snapshot logs what the
    straight run logged. Bookkeeping entries (`BOOKKEEPING`) are left out."""
    scalars = {"analysis/loss": summary["loss"]} if "loss" in summary else {}
    scalars |= {f"analysis/metrics/{name}": value for name, value in summary.get("metrics", {}).items()}
    for head, scores in summary.get("heads", {}).items():
        scalars |= {f"analysis/{name}/{head}": value for name, value in scores.items()}
    for layer, values in summary.get("layers", {}).items():
        scalars |= {f"analysis/{name}/{layer_label(layer)}": value for name, value in values.items()}
    for hook, values in summary.get("hooks", {}).items():
        scalars |= {f"analysis/hook_{name}/{hook}": value for name, value in values.items()}
    for section, values in summary.items():
        if section not in ("heads", "layers", "hooks", "metrics") and isinstance(values, dict):
            scalars |= {f"analysis/{section}/{key}": value for key, value in _numbers(values)}
    return {
        key: math.nan if value is None else float(value)
        for key, value in scalars.items()
        if _is_number_or_null(value) and key not in BOOKKEEPING
    }


def _numbers(values: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in values.items():
        if isinstance(value, dict):
            yield from _numbers(value, f"{prefix}{key}/")
        elif _is_number_or_null(value):
            yield f"{prefix}{key}", value


def log_scalars(loggers: Iterable[Logger], metrics: dict[str, float], step: int) -> None:
    for logger in loggers:
        logger.log_metrics(metrics, step)


def analysis_images(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Attention patterns (one image per layer, heads left to right) and each head's full OV circuit."""
    from lit_interp.images import heatmap_rgb

    images = {}
    for layer, patterns in enumerate(tensors.get("attention_patterns", [])):
        images[f"analysis/attention_pattern/{layer_label(layer)}"] = heatmap_rgb(list(patterns))
    for name, circuit in tensors.items():
        if name.startswith("ov_circuit.") and circuit.ndim == 2:
            images[f"analysis/ov_circuit/{name.split('.', 1)[1]}"] = heatmap_rgb([circuit])
    return images


def log_images(loggers: Iterable[Logger], images: dict[str, np.ndarray], step: int) -> None:
    """Each image to every logger that can take one: TensorBoard, Weights & Biases, MLflow."""
    from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

    for logger in loggers:
        for tag, image in images.items():
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(tag, image, step, dataformats="HWC")
            elif isinstance(logger, WandbLogger):
                logger.log_image(key=tag, images=[image], step=step)
            elif isinstance(logger, MLFlowLogger):
                logger.experiment.log_image(logger.run_id, image, artifact_file=f"{tag}/step_{step:07d}.png")


def custom_scalar_layout(scalars: Iterable[str]) -> dict[str, dict[str, list]]:
    """TensorBoard's Custom Scalars: one chart per score with a line for every head, layer or hook."""
    groups = sorted({tag.rsplit("/", 1)[0] for tag in scalars if tag.count("/") >= 2})
    charts: dict[str, dict[str, list]] = {}
    for group in groups:
        section = group.split("/", 1)[0]
        charts.setdefault(section, {})[group] = ["Multiline", [f"^{re.escape(group)}/"]]
    return charts


_LAID_OUT: weakref.WeakSet = weakref.WeakSet()  # TensorBoard loggers that have their custom-scalars layout


def log_analysis(
    loggers: Iterable[Logger], summary: dict[str, Any], tensors: dict[str, torch.Tensor], step: int
) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger

    loggers = list(loggers)
    scalars = flatten_scalars(summary)
    log_scalars(loggers, scalars, step)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger) and logger not in _LAID_OUT:
            _LAID_OUT.add(logger)  # once per run: the layout is a single event
            logger.experiment.add_custom_scalars(custom_scalar_layout(scalars))
    if tensors:
        log_images(loggers, analysis_images(tensors), step)


def continue_csv_metrics(logger, purge_step: int | None) -> None:
    """Resume a CSVLogger's `metrics.csv` instead of losing it: Lightning's writer deletes the file when
    it opens an existing version. Rows logged before `purge_step` are kept (the replayed steps log
    the rest again, as TensorBoard's `purge_step` does); `None` keeps every row (a finished run)."""
    import csv
    import warnings
    from pathlib import Path

    if logger._experiment is not None:
        raise RuntimeError("continue_csv_metrics must run before the CSVLogger writes anything")
    path = Path(logger.log_dir) / "metrics.csv"
    rows: list[dict[str, Any]] = []
    if path.is_file():
        with open(path, newline="") as file:
            for row in csv.DictReader(file):
                kept = {key: value for key, value in row.items() if key is not None and value not in ("", None)}
                step = kept.get("step")
                if step is not None and (purge_step is None or int(float(step)) < purge_step):
                    rows.append(kept)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        writer = logger.experiment  # opens the version: Lightning deletes the old file here
    writer.metrics[:0] = rows
    if rows:
        writer.save()
