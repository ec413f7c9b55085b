"""Callbacks: analysis snapshots on a schedule, training-dynamics scalars, and a throttled progress bar."""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from lit_interp import loggers as logging_utils
from lit_interp import snapshots
from lit_interp.errors import require
from lit_interp.heads import head_label


def snapshot_grid(
    max_steps: int, every_n_train_steps: int | None, log_spaced: int, per_decade: float = 0.0
) -> list[int]:
    """The scheduled snapshot steps up to max_steps: multiples of the cadence, `per_decade` steps per decade
    (round(10 ** (i / per_decade)): the same steps whatever max_steps is), and `log_spaced` steps geometrically
    spaced from 1 to max_steps (which depend on max_steps). Dense early, where circuits form."""
    steps = set(range(every_n_train_steps, max_steps + 1, every_n_train_steps)) if every_n_train_steps else set()
    if log_spaced:
        steps |= log_spaced_steps(max_steps, log_spaced)
    if per_decade:
        steps |= per_decade_steps(max_steps, per_decade)
    return sorted(step for step in steps if 1 <= step <= max_steps)


def snapshot_steps(
    max_steps: int, every_n_train_steps: int | None, log_spaced: int, per_decade: float = 0.0
) -> list[int]:
    """The steps a run of `max_steps` snapshots: the grid, and max_steps itself (the end of training)."""
    return sorted(set(snapshot_grid(max_steps, every_n_train_steps, log_spaced, per_decade)) | {max_steps})


def per_decade_steps(max_steps: int, per_decade: float) -> set[int]:
    """round(10 ** (i / per_decade)) for i = 0, 1, ... up to max_steps."""
    steps, index = set(), 0
    while (step := round(10 ** (index / per_decade))) <= max_steps:
        steps.add(step)
        index += 1
    return steps


def log_spaced_steps(max_steps: int, count: int) -> set[int]:
    """`count` distinct steps from 1 to max_steps, geometrically spaced (more points than `count` before rounding
    merges the early ones, so the early steps are all there)."""
    for points in range(count, 10 * count + 1):
        steps = {round(max_steps ** (i / max(points - 1, 1))) for i in range(points)}
        if len(steps) >= min(count, max_steps):
            return steps
    return steps


class AnalysisSnapshots(Callback):
    """Runs `run_analysis` on a schedule of steps and at the end of training; writes and logs the results.

    Snapshots go to `<run dir>/analysis/step_<global_step:07d>.{json,safetensors}`, their scalars to
    every logger (`log_metrics`) and their images to each logger that takes images. Every rank
    analyses the same probe batch in lockstep (no rank waits in a collective for another) and rank 0
    writes. An analysis failure is written to `analysis/errors.log` and training goes on. A step whose
    JSON already exists (a resumed run replaying steps) is re-logged from its files, not recomputed.
    """

    def __init__(
        self,
        every_n_train_steps: int | None = None,
        log_spaced: int = 0,
        log_spaced_per_decade: float = 0.0,
        probe_batch_size: int = 256,
        hook_mean_ablation: bool = True,
        hook_mean_ablation_every_n_snapshots: int = 1,
        expensive_every_n_snapshots: int = 1,
        log_images: bool = True,
        images_every_n_snapshots: int = 1,
        sweep_hooks: bool | None = None,
        sweep_every_n_snapshots: int | None = None,
    ):
        """`log_spaced_per_decade` snapshots at the same steps whatever max_steps is (a run resumed to a larger
        max_steps snapshots where a straight run would); `log_spaced` spreads that many over the run.
        `sweep_hooks` and `sweep_every_n_snapshots` are the deprecated names of `hook_mean_ablation` and
        `hook_mean_ablation_every_n_snapshots` (a warning; "sweep" is the Optuna command)."""
        super().__init__()
        self.every_n_train_steps = every_n_train_steps
        self.log_spaced = log_spaced
        self.log_spaced_per_decade = log_spaced_per_decade
        self.probe_batch_size = probe_batch_size
        self.hook_mean_ablation = _renamed("sweep_hooks", sweep_hooks, "hook_mean_ablation", hook_mean_ablation)
        self.hook_mean_ablation_every_n_snapshots = _renamed(
            "sweep_every_n_snapshots",
            sweep_every_n_snapshots,
            "hook_mean_ablation_every_n_snapshots",
            hook_mean_ablation_every_n_snapshots,
        )
        self.expensive_every_n_snapshots = expensive_every_n_snapshots
        self.log_images = log_images
        self.images_every_n_snapshots = images_every_n_snapshots
        self._check_arguments()
        self.run_dir: Path | None = None  # set in setup (all ranks) or by the CLI
        self._steps: list[int] = []
        self._grid: list[int] = []
        self._warned = False
        self._logged: set[int] = set()  # steps whose scalars this process has logged
        self._attempted: set[int] = set()  # steps this process has analyzed (or failed to)

    def _check_arguments(self) -> None:
        every = self.every_n_train_steps
        require(
            every is None or every >= 0,
            f"every_n_train_steps={every} must be >= 0; 0 for no fixed cadence, null to follow the checkpoints",
        )
        require(
            self.log_spaced >= 0,
            f"log_spaced={self.log_spaced} must be >= 0; e.g. 20 snapshots geometrically spaced over the run",
        )
        require(
            0 <= self.log_spaced_per_decade <= 1000,
            f"log_spaced_per_decade={self.log_spaced_per_decade} must lie in [0, 1000]; e.g. 5 snapshots per decade",
        )
        require(1 <= self.probe_batch_size <= 2**24, f"probe_batch_size={self.probe_batch_size} must be in [1, 2**24]")
        for name in ("hook_mean_ablation_every_n_snapshots", "images_every_n_snapshots", "expensive_every_n_snapshots"):
            value = getattr(self, name)
            require(value >= 1, f"{name}={value} must be >= 1; 1 runs it at every snapshot")

    def cadence(self, trainer: pl.Trainer) -> int | None:
        """Our own every_n_train_steps, else that of the trainer's step-based ModelCheckpoint."""
        if self.every_n_train_steps is not None:
            return self.every_n_train_steps or None
        steps = [
            c._every_n_train_steps
            for c in trainer.checkpoint_callbacks
            if isinstance(c, ModelCheckpoint) and c._every_n_train_steps >= 1
        ]
        return min(steps) if steps else None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.run_dir is None:
            self.run_dir = Path(trainer.log_dir or trainer.default_root_dir)  # a collective: every rank is here
        if trainer.max_steps and trainer.max_steps > 0:
            schedule = (trainer.max_steps, self.cadence(trainer), self.log_spaced, self.log_spaced_per_decade)
            self._grid, self._steps = snapshot_grid(*schedule), snapshot_steps(*schedule)

    def is_scheduled(self, trainer: pl.Trainer, step: int) -> bool:
        if self._steps:
            return step in self._steps
        every = self.cadence(trainer)
        return bool(every) and step % every == 0

    def ordinal(self, trainer: pl.Trainer, step: int) -> int:
        """1 for the first snapshot of the grid, 2 for the second, ... (the end of training, off the grid, is not
        counted: the k-th grid snapshots of a resumed run are the straight run's)."""
        if self._steps:
            return sum(1 for scheduled in self._grid if scheduled <= step)
        return step // (self.cadence(trainer) or step)

    def is_kth(self, trainer: pl.Trainer, k: int, final: bool) -> bool:
        """Every k-th scheduled snapshot, and always the last one of training (so it is complete)."""
        return final or self.ordinal(trainer, trainer.global_step) % k == 0

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A resumed run's logger purged what was logged at and after the checkpoint's step: log it again.
        step = trainer.global_step
        if step > 0 and trainer.is_global_zero and snapshots.snapshot_path(self.run_dir, step, ".json").exists():
            self._relog(trainer, step, final=False)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Runs before ModelCheckpoint's hook (Lightning orders checkpoint callbacks last), on the
        # same weights that checkpoint then saves.
        if self.is_scheduled(trainer, trainer.global_step) and not trainer.fit_loop._should_accumulate():
            self.snapshot(trainer, pl_module, final=trainer.global_step == trainer.max_steps)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.snapshot(trainer, pl_module, final=True)

    def snapshot(self, trainer: pl.Trainer, pl_module: pl.LightningModule, final: bool) -> None:
        step = trainer.global_step
        if trainer.sanity_checking or trainer.fast_dev_run or step == 0 or self.run_dir is None:
            return
        if snapshots.snapshot_path(self.run_dir, step, ".json").exists():
            if trainer.is_global_zero and step not in self._logged:
                self._relog(trainer, step, final)
            return
        if step in self._attempted:
            return  # a periodic snapshot at the final step already ran (or failed)
        self._attempted.add(step)
        from lit_interp.analysis import snapshot as analysis

        expensive = self.is_kth(trainer, self.expensive_every_n_snapshots, final)
        hooks = self.hook_mean_ablation and self.is_kth(trainer, self.hook_mean_ablation_every_n_snapshots, final)
        try:
            summary, tensors = analysis.run_analysis(
                pl_module,
                trainer.datamodule,
                step,
                probe_batch_size=self.probe_batch_size,
                probe_index=0,
                hook_mean_ablation=hooks,
                expensive=expensive,
            )
            if trainer.is_global_zero:
                snapshots.write_snapshot(self.run_dir, step, summary, tensors)
                self._log(trainer, summary, tensors, step, final)
        except Exception as error:  # analysis must never stop training
            self._record_error(trainer, step, error)

    def _relog(self, trainer: pl.Trainer, step: int, final: bool) -> None:
        try:
            snapshot = snapshots.read_snapshot(snapshots.snapshot_path(self.run_dir, step, ".json"))
            self._log(trainer, snapshot.summary, snapshot.torch_tensors(), step, final)
        except Exception as error:
            self._record_error(trainer, step, error)

    def _log(
        self, trainer: pl.Trainer, summary: dict, tensors: dict[str, torch.Tensor], step: int, final: bool
    ) -> None:
        self._logged.add(step)
        images = self.log_images and self.is_kth(trainer, self.images_every_n_snapshots, final)
        logging_utils.log_analysis(trainer.loggers, summary, tensors if images else {}, step)

    @override
    def state_dict(self) -> dict[str, Any]:
        # analyze's default probe size (snapshots.snapshot_probe_size), so it reproduces the snapshots
        return {snapshots.PROBE_STATE_KEY: self.probe_batch_size}

    def _record_error(self, trainer: pl.Trainer, step: int, error: Exception) -> None:
        if not trainer.is_global_zero:
            return
        log = snapshots.errors_log(self.run_dir)
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as file:
                file.write(f"step {step}: {type(error).__name__}: {error}\n{traceback.format_exc()}\n")
        except OSError:
            pass
        if not self._warned:
            self._warned = True
            rank_zero_warn(
                f"analysis failed at step {step} ({type(error).__name__}: {error}); training goes on, details in {log}"
            )


def _renamed(old_name: str, old_value: Any, new_name: str, new_value: Any) -> Any:
    """The value of a renamed argument: the deprecated one when given (with a warning), else the new one."""
    if old_value is None:
        return new_value
    rank_zero_warn(f"AnalysisSnapshots: {old_name} is deprecated; write {new_name}: {json.dumps(old_value)}")
    return old_value


def _parameter_group(name: str) -> str:
    """`model.blocks.1.attn.W_Q` -> `blocks.1`; `model.embed.W_E` -> `embed`."""
    parts = name.removeprefix("model.").split(".")
    return ".".join(parts[:2]) if parts[0] == "blocks" else parts[0]


class TrainingDynamics(Callback):
    """Gradient norm, parameter norm and distance from initialisation per layer, and attention entropy
    per head, logged every `trainer.log_every_n_steps` steps as `dynamics/...` scalars.

    The entropy comes from the training forward pass itself (a hook on `hook_pattern` at logging
    steps only), so it costs no extra forward pass; norms are read once per logging step.
    """

    def __init__(self, log_every_n_steps: int | None = None):
        super().__init__()
        require(
            log_every_n_steps is None or log_every_n_steps >= 1,
            f"log_every_n_steps={log_every_n_steps} must be >= 1 or null",
        )
        self.log_every_n_steps = log_every_n_steps
        self.initial: dict[str, torch.Tensor] = {}
        self._metrics: dict[str, float] = {}
        self._handles: list = []

    def _every(self, trainer: pl.Trainer) -> int:
        return self.log_every_n_steps or trainer.log_every_n_steps or 50

    def _due(self, trainer: pl.Trainer) -> bool:
        return trainer.global_step % self._every(trainer) == 0

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.initial:  # a resumed run brings its initial weights from the checkpoint
            self.initial = {
                name: p.detach().to("cpu", copy=True) for name, p in pl_module.named_parameters() if p.requires_grad
            }

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self._due(trainer) or not hasattr(pl_module, "model"):
            return
        self._metrics = {}
        for layer, block in enumerate(pl_module.model.blocks):
            self._handles.append(block.attn.hook_pattern.register_forward_hook(self._entropy_hook(layer)))

    def _entropy_hook(self, layer: int):
        def hook(module, inputs, pattern: torch.Tensor) -> None:
            with torch.no_grad():
                from lit_interp.analysis.patterns import attention_entropy

                for head, value in enumerate(attention_entropy(pattern.detach().float()).tolist()):
                    self._metrics[f"dynamics/attention_entropy/{head_label(layer, head)}"] = value

        return hook

    @override
    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if not self._due(trainer):
            return
        squares: dict[str, torch.Tensor] = {}
        for name, parameter in pl_module.named_parameters():
            if parameter.grad is not None:
                group = _parameter_group(name)
                squares[group] = squares.get(group, 0) + parameter.grad.detach().float().pow(2).sum()
        self._metrics |= {f"dynamics/grad_norm/{group}": float(total.sqrt()) for group, total in squares.items()}

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._metrics:
            return
        norms: dict[str, torch.Tensor] = {}
        distances: dict[str, torch.Tensor] = {}
        for name, parameter in pl_module.named_parameters():
            if name in self.initial:
                group = _parameter_group(name)
                weights = parameter.detach().float()
                norms[group] = norms.get(group, 0) + weights.pow(2).sum()
                distances[group] = (
                    distances.get(group, 0) + (weights - self.initial[name].to(weights.device)).pow(2).sum()
                )
        metrics = self._metrics | {f"dynamics/param_norm/{g}": float(v.sqrt()) for g, v in norms.items()}
        metrics |= {f"dynamics/distance_from_init/{g}": float(v.sqrt()) for g, v in distances.items()}
        self._metrics = {}
        if trainer.is_global_zero:
            # The step of Lightning's own train/loss for this batch (global_step before it was taken).
            logging_utils.log_scalars(trainer.loggers, metrics, trainer.global_step - 1)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"initial": self.initial}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.initial = dict(state_dict.get("initial", {}))


class ThrottledProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar counting optimizer steps up to max_steps (a resumed run shows `step/max_steps` and an
    ETA), redrawn at most every `min_interval_s` seconds and at the end, without Lightning's `v_num`.

    Lightning's bar redraws on every step (`refresh_rate=1`), a noticeable share of a CPU step of these
    models (docs/benchmarks.md). The CLI uses this one unless the config brings its own progress bar
    or turns it off. It shows the training loss (`train/loss`) beside the validation metrics.
    """

    def __init__(self, min_interval_s: float = 0.25, leave: bool = False):
        super().__init__(refresh_rate=1, leave=leave)
        require(min_interval_s >= 0, f"min_interval_s={min_interval_s} must be >= 0")
        self.min_interval_s = min_interval_s
        self._last_draw = float("-inf")

    @override
    def on_train_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_start(trainer, *args)
        self._count_steps(trainer)  # a resumed run starts mid-epoch: no epoch start comes

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._count_steps(trainer)

    def _count_steps(self, trainer: pl.Trainer) -> None:
        if trainer.max_steps and trainer.max_steps > 0 and self.train_progress_bar is not None:
            self.train_progress_bar.total = trainer.max_steps  # the data is endless: the run's length is max_steps
            self.train_progress_bar.n = self.train_progress_bar.initial = trainer.global_step
            self.train_progress_bar.set_description("step")

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        if bar is not None and self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()

    @override
    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the run directory is printed once at the start
        return metrics

    @override
    def _should_update(self, current: int, total: int) -> bool:
        if not super()._should_update(current, total):
            return False
        now = time.monotonic()
        if current == total or now - self._last_draw >= self.min_interval_s:
            self._last_draw = now
            return True
        return False
