"""`load`: open a run or a checkpoint in a notebook as a `Run` (task module, data, HookedTransformer, snapshots)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformer_lens import HookedTransformer

from lit_interp.analysis.examples import TopKPredictions, targets_by_position, top_k_predictions
from lit_interp.analysis.interventions import WeightEdit, edited_losses
from lit_interp.analysis.losses import is_token_task
from lit_interp.analysis.snapshot import DEFAULT_PROBE_BATCH_SIZE
from lit_interp.analysis.weights import processed_copy
from lit_interp.checkpoints import latest_checkpoint, load_checkpoint, validate_schema
from lit_interp.errors import ConfigError
from lit_interp.heads import parse_head_label
from lit_interp.memory import require_batch_fits
from lit_interp.rebuild import rebuild
from lit_interp.snapshots import RunSnapshots, read_snapshots, snapshot_probe_size
from lit_interp.tasks.base import Stream, SyntheticDataModule, TaskModule

if TYPE_CHECKING:
    import pandas


@dataclass
class Run:
    """A trained task rebuilt from one checkpoint, with the snapshots its run wrote (if it lies in a run)."""

    module: TaskModule
    datamodule: SyntheticDataModule
    checkpoint_path: Path
    run_dir: Path | None
    step: int
    snapshots: RunSnapshots = field(default_factory=lambda: RunSnapshots(Path()))
    snapshot_probe_batch_size: int = DEFAULT_PROBE_BATCH_SIZE

    @property
    def model(self) -> HookedTransformer:
        return self.module.model

    def probe_batch(self, size: int | None = None, index: int = 0) -> torch.Tensor:
        """Batch `index` of the probe stream (never trained on); size None: the size the run's snapshots used."""
        size = self.snapshot_probe_batch_size if size is None else size
        if not isinstance(size, int) or size < 1:
            raise ConfigError(f"probe batch size={size!r} must be an integer >= 1")
        require_batch_fits(self.model.cfg, size, "the probe batch size")
        return self.datamodule.make_batch(Stream.PROBE, index, size, device=self.module.device)

    def head_scores(self) -> pandas.DataFrame:
        """Every snapshot's per-head scores: one row per (step, head), one column per score."""
        return head_score_table(self.snapshots.summaries)

    def top_k(self, tokens: torch.Tensor, k: int = 10) -> TopKPredictions:
        """Seed 003's `test_prompt`: the k likeliest next tokens at every position of `tokens` ([batch pos] or
        [pos]) and each target's rank; `run.top_k(tokens).format(0, tokens)` prints sequence 0."""
        if not is_token_task(tokens):
            raise ConfigError(f"top_k reads token ids; got a {tokens.dtype} batch (a vector task has no next token)")
        tokens = (tokens[None] if tokens.ndim == 1 else tokens).to(self.module.device)
        return top_k_predictions(self.model, tokens, k, targets_by_position(self.module, tokens))

    def edited_losses(
        self, experiments: Mapping[str, Sequence[WeightEdit]], batch: torch.Tensor | None = None
    ) -> dict[str, float]:
        """The task's loss under each named list of weight edits (`lit_interp.analysis.interventions`'s
        `ZeroHeadOutput`, `LowRankIdentityQK`), on the processed copy as seed 002 edits it; batch None: the probe
        batch the snapshots used. An empty list gives the unedited loss."""
        batch = self.probe_batch() if batch is None else batch.to(self.module.device)
        model = processed_copy(self.model, center_unembed=is_token_task(batch))
        return edited_losses(model, self.module, batch, experiments, in_place=True)  # the copy is ours to edit

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
    validate_schema(checkpoint, checkpoint_path)
    module, datamodule = rebuild(checkpoint, checkpoint_path)
    module.to(device).eval()
    probe_size = snapshot_probe_size(checkpoint) or DEFAULT_PROBE_BATCH_SIZE
    require_batch_fits(module.model.cfg, probe_size, f"the probe batch size of {checkpoint_path}")
    return Run(
        module=module,
        datamodule=datamodule,
        checkpoint_path=checkpoint_path,
        run_dir=run_dir,
        step=checkpoint.get("global_step", 0),
        snapshots=read_snapshots(run_dir, on_damaged="raise") if run_dir else RunSnapshots(checkpoint_path.parent),
        snapshot_probe_batch_size=probe_size,
    )


def head_score_table(summaries: list[dict[str, Any]]) -> pandas.DataFrame:
    """Columns step, layer, head, label ("L0H0") and one per head score, from run_analysis summaries."""
    import pandas

    rows = []
    for summary in summaries:
        for label, scores in summary.get("heads", {}).items():
            layer, head = parse_head_label(label)
            rows.append({"step": summary["step"], "layer": layer, "head": head, "label": label, **scores})
    return pandas.DataFrame(rows, columns=None if rows else ["step", "layer", "head", "label"])
