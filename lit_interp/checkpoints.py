"""Finding and safely opening lit_interp checkpoints (no pickled code is ever executed)."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from lit_interp.errors import ConfigError
from lit_interp.files import atomic_write
from lit_interp.memory import declared_parameters, require_fits
from lit_interp.rundir import version_number

# Periodic checkpoints are `checkpoints/step_<7 digits>.ckpt` (StepCheckpoint's filename), beside last.ckpt.
STEP_CHECKPOINT_FILENAME = "step_{step:07d}"
STEP_CHECKPOINT_NAME = re.compile(r"step_(\d+)")


class StepCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that also saves when training stops between two periodic saves, after the
    validation of its step, and (last.ckpt only) when the run is interrupted by Ctrl-C or SIGTERM.
    The loggers are flushed before every save, and the save at the end of training comes after
    everything else the run logs (the last snapshot, the final metrics), so a checkpoint at
    `max_steps` is a finished run: resuming from it has nothing to replay or log again.

    With `every_n_train_steps`, Lightning saves nothing at `max_steps` unless it is a multiple; the
    final weights (and the resume position) would be lost. A periodic save at a step that also
    validates waits for the validation, so a run resumed from it neither repeats nor loses that
    validation point.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._after_validation = False

    def _validates_now(self, trainer, batch_idx: int) -> bool:
        interval = trainer.val_check_batch
        return bool(
            trainer.enable_validation and isinstance(interval, int) and interval > 0 and (batch_idx + 1) % interval == 0
        )

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = self._every_n_train_steps
        if every >= 1 and trainer.global_step % every == 0 and self._validates_now(trainer, batch_idx):
            self._after_validation = not self._should_skip_saving_checkpoint(trainer)
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    @override
    def on_validation_end(self, trainer, pl_module) -> None:
        if self._after_validation and not trainer.sanity_checking:
            self._after_validation = False
            if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
                return  # the final save waits for on_train_end, after the run's summary is logged
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
            return
        super().on_validation_end(trainer, pl_module)

    @override
    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.fast_dev_run or self._should_skip_saving_checkpoint(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    @override
    def _save_checkpoint(self, trainer, filepath: str) -> None:
        # What was logged up to this checkpoint is on disk before the checkpoint is: a run killed
        # after it and resumed from it neither loses nor repeats a logged point.
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.save()
        super()._save_checkpoint(trainer, filepath)

    @override
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """A save after a step that validated (at the end of training, or on SIGTERM) records the step's logging
        counter as Lightning's own save at that validation's end does: Lightning resumes such a checkpoint by
        skipping the validation and counting the step once more, which would log every later point one step late."""
        loops = checkpoint.get("loops", {}).get("fit_loop", {})
        state, batches = loops.get("epoch_loop.state_dict", {}), loops.get("epoch_loop.batch_progress", {})
        interval = trainer.val_check_batch
        validated = trainer.enable_validation and isinstance(interval, int) and interval > 0
        ready = batches.get("total", {}).get("ready", -1)
        if validated and ready > 0 and ready % interval == 0 and state.get("_batches_that_stepped") == ready:
            state["_batches_that_stepped"] = ready - 1

    @override
    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        # Lightning raises SIGTERMException between two steps, so the state is whole; any other
        # exception may come mid-step (or from diverged weights) and is not saved.
        if isinstance(exception, SIGTERMException) and not trainer.fast_dev_run and not trainer.sanity_checking:
            if self._last_global_step_saved != trainer.global_step:
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside its final name, fsyncs it and renames it over the
    final name: atomic on every local filesystem. On a failed write (a full disk) the partial file is
    removed, the previous checkpoint under that name stays whole, and the error is one line."""

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:

        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda temporary: _save(checkpoint, temporary))
        except Exception as error:
            cause = next((e for e in (error, error.__context__, error.__cause__) if isinstance(e, OSError)), None)
            if cause is None:
                raise
            raise CheckpointWriteError(
                f"could not write checkpoint {path}: {cause.strerror or cause}; free space in {path.parent} "
                "(the previous checkpoints are intact) and resume with --ckpt_path last"
            ) from None


def _save(checkpoint: dict[str, Any], path: Path) -> None:
    import torch

    with open(path, "wb") as file:
        torch.save(checkpoint, file)


class CheckpointWriteError(ConfigError):
    """A checkpoint could not be written (disk full, permissions); nothing partial is left behind."""


def safe_globals() -> list:
    """The non-tensor types a Lightning checkpoint holds, allowed through `weights_only=True`."""
    import collections

    import torch
    from lightning.fabric.utilities.data import AttributeDict

    return [AttributeDict, collections.OrderedDict, collections.defaultdict, dict, torch.Size]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load `path` with `weights_only=True`; a user's bad file becomes a one-line ConfigError."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"checkpoint {path} does not exist; pass an existing .ckpt file (see lightning_logs/version_*/checkpoints/)"
        )
    try:
        with torch.serialization.safe_globals(safe_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ConfigError(
            f"checkpoint {path} was refused: it holds objects that are not plain data ({_first_sentence(error)})"
        ) from None
    except Exception:  # torch reports truncation and foreign files with many exception types
        raise ConfigError(
            f"checkpoint {path} is not a complete PyTorch checkpoint (truncated, or another kind of file); pass "
            "a .ckpt written by lit_interp"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(
            f"checkpoint {path} is not a Lightning checkpoint (no state_dict); pass a .ckpt written by lit_interp"
        )
    return checkpoint


def _first_sentence(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.split(". ")[0].rstrip(".")


def checkpoint_module_class(checkpoint: dict[str, Any]) -> str | None:
    """The task module class a lit_interp checkpoint records, or None (not lit_interp's, or malformed)."""
    meta = checkpoint.get("lit_interp")
    name = meta.get("module_class") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else None


def check_compatible(checkpoint: dict[str, Any], path: str | Path, module) -> None:
    """Refuse a checkpoint of another task, or of the same task with other shapes."""
    expected = f"{type(module).__module__}.{type(module).__qualname__}"
    found = checkpoint_module_class(checkpoint)
    if found is None:
        raise ConfigError(f"checkpoint {path} was not written by lit_interp; pass a checkpoint from a lit_interp run")
    if found != expected:
        raise ConfigError(
            f"checkpoint {path} is of task {found}, but the config trains {expected}; use that task's config or "
            "another checkpoint"
        )
    own = module.state_dict()
    for name, tensor in checkpoint["state_dict"].items():
        if name in own and tuple(own[name].shape) != tuple(tensor.shape):
            raise ConfigError(
                f"checkpoint {path} has {name} of shape {tuple(tensor.shape)} but the config builds "
                f"{tuple(own[name].shape)}; "
                "use the config the checkpoint was trained with"
            )
    missing = sorted(set(own) - set(checkpoint["state_dict"]))
    if missing:
        raise ConfigError(
            f"checkpoint {path} lacks {missing[0]} (and {len(missing) - 1} more); use the config the checkpoint "
            "was trained with"
        )


def version_of(path: Path, root: Path) -> int | None:
    """N when `path` is `root/version_N/checkpoints/<file>`, else None."""
    try:
        relative = path.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    if len(relative.parts) != 3 or relative.parts[1] != "checkpoints":
        return None
    return version_number(Path(relative.parts[0]))


# Sizes a checkpoint may declare before anything is built from it.
SIZE_KEYS = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab", "seq_len", "vector_dim")


def validate_schema(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint whose lit_interp fields are malformed, or whose declared model is too large to build."""
    meta = checkpoint.get("lit_interp")
    if not isinstance(meta, dict) or not isinstance(meta.get("module_class"), str):
        raise ConfigError(
            f"checkpoint {path} was not written by lit_interp (no lit_interp.module_class); pass a checkpoint "
            "from a lit_interp run"
        )
    for field in ("hyper_parameters", "datamodule_hyper_parameters", "state_dict"):
        if field in checkpoint and not isinstance(checkpoint[field], dict):
            raise ConfigError(
                f"checkpoint {path} has a malformed {field} ({type(checkpoint[field]).__name__}, not a "
                "mapping); pass a checkpoint from a lit_interp run"
            )
    step = checkpoint.get("global_step", 0)
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < 2**63:
        raise ConfigError(
            f"checkpoint {path} has global_step {str(step)[:40]!r}, not a step count; pass a checkpoint from a "
            "lit_interp run"
        )
    for field in ("hyper_parameters", "datamodule_hyper_parameters"):
        for key in SIZE_KEYS:
            value = checkpoint.get(field, {}).get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 2**24):
                raise ConfigError(
                    f"checkpoint {path} declares {key}={value!r}, not a size between 0 and {2**24}; pass a "
                    "checkpoint from a lit_interp run"
                )
    hparams = {**checkpoint.get("datamodule_hyper_parameters", {}), **checkpoint.get("hyper_parameters", {})}
    require_fits(
        4 * declared_parameters(hparams), f"the model checkpoint {path} declares", "analyze it on a larger machine"
    )


def check_same_world_size(checkpoint: dict[str, Any], path: str | Path, world_size: int) -> None:
    """Refuse to resume on another number of processes: the global batch and each rank's data stream would change."""
    trained = checkpoint.get("lit_interp", {}).get("world_size", 1)
    if trained != world_size:
        raise ConfigError(
            f"checkpoint {path} was trained on {trained} process(es) and this run has {world_size}: the global "
            "batch and the "
            f"per-rank data streams would change; resume with --trainer.devices={trained} (and the same "
            "strategy and num_nodes)"
        )


def run_task(run_dir: Path) -> str | None:
    """The task module class a run trained: its config.yaml's model.class_path, else its last.ckpt's (None: unknown)."""
    import yaml

    from lit_interp.files import read_regular_file

    try:
        config = yaml.safe_load(read_regular_file(run_dir / "config.yaml", 2**24, "run config").decode("utf-8"))
        name = config["model"]["class_path"]
        if isinstance(name, str):
            return name
    except (ConfigError, UnicodeDecodeError, yaml.YAMLError, RecursionError, KeyError, TypeError):
        pass
    try:
        return checkpoint_module_class(load_checkpoint(run_dir / "checkpoints" / "last.ckpt"))
    except ConfigError:
        return None


def find_last_checkpoint(root: Path, module_class: str) -> tuple[Path, int]:
    """The `last.ckpt` of the newest run of `module_class` under `root`; never another run's.

    A run whose last.ckpt is missing or unreadable is named, with its newest readable step_*.ckpt
    offered, and a run whose task cannot be told stops the search: an older run is never taken silently.
    """
    runs = sorted(
        ((number, path) for path in root.glob("version_*") if (number := version_number(path)) is not None),
        reverse=True,
    )
    for _, run in runs:
        if not (run / "checkpoints").is_dir():
            continue  # it never saved a checkpoint: nothing of it to resume
        task = run_task(run)
        if task is None:
            raise ConfigError(
                f"--ckpt_path last: cannot tell which task {run} trained (its config.yaml and last.ckpt are "
                "unreadable); pass the checkpoint to resume with --ckpt_path FILE"
            )
        if task != module_class:
            continue
        last = run / "checkpoints" / "last.ckpt"
        try:
            validate_schema(load_checkpoint(last), last)
        except ConfigError as error:
            raise ConfigError(f"--ckpt_path last: {error}; {resume_hint(run)}") from None
        return last, version_number(run)
    raise ConfigError(
        f"--ckpt_path last: no run of {module_class.rsplit('.', 1)[-1]} with checkpoints under {root}; start a new "
        "run without --ckpt_path"
    )


def resume_hint(run_dir: Path) -> str:
    """Resume from the run's newest readable step_*.ckpt, or start again."""
    for path in sorted((run_dir / "checkpoints").glob("step_*.ckpt"), key=checkpoint_step, reverse=True):
        try:
            validate_schema(load_checkpoint(path), path)
            return f"resume from its newest readable checkpoint with --ckpt_path {path}"
        except ConfigError:
            continue
    return "it has no readable checkpoint: start a new run without --ckpt_path"


def checkpoint_step(path: Path) -> int:
    """N of a periodic checkpoint `step_<N>.ckpt`; -1 for any other name."""
    match = STEP_CHECKPOINT_NAME.fullmatch(path.stem)
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
