"""`load`: open a run or a checkpoint in a notebook as a `Run` (task module, data, HookedTransformer, snapshots)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformer_lens import HookedTransformer

from lit_interp.analyze import rebuild
from lit_interp.checkpoints import load_checkpoint
from lit_interp.errors import ConfigError
from lit_interp.tasks.base import Stream, SyntheticDataModule, TaskModule

if TYPE_CHECKING:
    import pandas

DEFAULT_PROBE_BATCH_SIZE = 256  # run_analysis's default, used when the run does not say


@dataclass
class Run:
    """A trained task rebuilt from one checkpoint, with the snapshots its run wrote (if it lies in a run)."""

    module: TaskModule
    datamodule: SyntheticDataModule
    checkpoint_path: Path
    run_dir: Path | None
    step: int
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    snapshot_probe_batch_size: int = DEFAULT_PROBE_BATCH_SIZE

    @property
    def model(self) -> HookedTransformer:
        return self.module.model

    def probe_batch(self, size: int | None = None, index: int = 0) -> torch.Tensor:
        """Batch `index` of the probe stream (never trained on); size None: the size the run's snapshots used."""
        size = self.snapshot_probe_batch_size if size is None else size
        if size < 1:
            raise ConfigError(f"probe batch size={size} must be >= 1")
        return self.datamodule.make_batch(Stream.PROBE, index, size, device=self.module.device)

    def head_scores(self) -> pandas.DataFrame:
        """Every snapshot's per-head scores: one row per (step, head), one column per score."""
        return head_score_table(self.snapshots)

    def analyze(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """`run_analysis` at this checkpoint's step; kwargs as run_analysis's (probe_batch_size, expensive, ...)."""
        from lit_interp.analysis.snapshot import run_analysis

        kwargs.setdefault("probe_batch_size", self.snapshot_probe_batch_size)
        return run_analysis(self.module, self.datamodule, self.step, **kwargs)


def load(path: str | Path, device: str | torch.device = "cpu") -> Run:
    """A run directory (its last.ckpt, else its latest step_*.ckpt) or a .ckpt file, rebuilt on `device`."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} does not exist; pass a run directory (lightning_logs/version_N) or a .ckpt file")
    checkpoint_path = latest_checkpoint(path) if path.is_dir() else path
    run_dir = checkpoint_path.parent.parent if checkpoint_path.parent.name == "checkpoints" else None
    checkpoint = load_checkpoint(checkpoint_path)
    module, datamodule = rebuild(checkpoint, checkpoint_path)
    module.to(device).eval()
    return Run(
        module=module,
        datamodule=datamodule,
        checkpoint_path=checkpoint_path,
        run_dir=run_dir,
        step=int(checkpoint.get("global_step", 0)),
        snapshots=read_snapshots(run_dir) if run_dir else [],
        snapshot_probe_batch_size=snapshot_probe_batch_size(run_dir) if run_dir else DEFAULT_PROBE_BATCH_SIZE,
    )


def checkpoint_step(path: Path) -> int:
    match = re.fullmatch(r"step_(\d+)", path.stem)
    return int(match.group(1)) if match else -1


def latest_checkpoint(run_dir: Path) -> Path:
    """`run_dir/checkpoints/last.ckpt`, else the step_*.ckpt of the highest step."""
    folder = run_dir / "checkpoints"
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    steps = sorted(folder.glob("step_*.ckpt"), key=checkpoint_step)
    if steps:
        return steps[-1]
    runs = sorted(path.name for path in run_dir.glob("version_*/checkpoints"))
    hint = f"pass one of its runs, e.g. {run_dir / runs[0]}" if runs else "pass a run directory that holds checkpoints/"
    raise ConfigError(f"{run_dir} has no checkpoints ({folder}/last.ckpt or step_*.ckpt); {hint}")


def read_snapshots(run_dir: Path) -> list[dict[str, Any]]:
    """The run's analysis/step_*.json summaries, sorted by step (empty when the run wrote none)."""
    summaries = []
    for file in (run_dir / "analysis").glob("step_*.json"):
        try:
            summaries.append(json.loads(file.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConfigError(f"snapshot {file} is not valid JSON (interrupted write?); delete it and retry") from None
    return sorted(summaries, key=lambda summary: summary["step"])


def snapshot_probe_batch_size(run_dir: Path) -> int:
    """The AnalysisSnapshots probe_batch_size in the run's config.yaml, else run_analysis's default."""
    import yaml

    config_file = run_dir / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else None
    callbacks = (config or {}).get("trainer", {}).get("callbacks") or []
    for callback in callbacks:
        if isinstance(callback, dict) and str(callback.get("class_path", "")).endswith("AnalysisSnapshots"):
            return int((callback.get("init_args") or {}).get("probe_batch_size", DEFAULT_PROBE_BATCH_SIZE))
    return DEFAULT_PROBE_BATCH_SIZE


def head_score_table(summaries: list[dict[str, Any]]) -> pandas.DataFrame:
    """Columns step, layer, head, label ("L0H0") and one per head score, from run_analysis summaries."""
    import pandas

    rows = []
    for summary in summaries:
        for label, scores in summary.get("heads", {}).items():
            layer, head = map(int, re.fullmatch(r"L(\d+)H(\d+)", label).groups())
            rows.append({"step": summary["step"], "layer": layer, "head": head, "label": label, **scores})
    return pandas.DataFrame(rows, columns=None if rows else ["step", "layer", "head", "label"])
