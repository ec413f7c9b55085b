"""Finding and safely opening lit_interp checkpoints (no pickled code is ever executed)."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

from lit_interp.errors import ConfigError


class StepCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that also saves when training stops between two periodic saves.

    With `every_n_train_steps`, Lightning saves nothing at `max_steps` unless it is a multiple;
    the final weights (and the resume position) would be lost.
    """

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.fast_dev_run or self._should_skip_saving_checkpoint(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)


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
        raise ConfigError(f"checkpoint {path} does not exist; pass an existing .ckpt file (see lightning_logs/version_*/checkpoints/)")
    try:
        with torch.serialization.safe_globals(safe_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ConfigError(f"checkpoint {path} was refused: it holds objects that are not plain data ({_first_sentence(error)})") from None
    except Exception:  # torch reports truncation and foreign files with many exception types
        raise ConfigError(f"checkpoint {path} is not a complete PyTorch checkpoint (truncated, or another kind of file); pass a .ckpt written by lit_interp") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"checkpoint {path} is not a Lightning checkpoint (no state_dict); pass a .ckpt written by lit_interp")
    return checkpoint


def _first_sentence(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.split(". ")[0].rstrip(".")


def checkpoint_module_class(checkpoint: dict[str, Any]) -> str | None:
    return checkpoint.get("lit_interp", {}).get("module_class")


def check_compatible(checkpoint: dict[str, Any], path: str | Path, module) -> None:
    """Refuse a checkpoint of another task, or of the same task with other shapes."""
    expected = f"{type(module).__module__}.{type(module).__qualname__}"
    found = checkpoint_module_class(checkpoint)
    if found is None:
        raise ConfigError(f"checkpoint {path} was not written by lit_interp; pass a checkpoint from a lit_interp run")
    if found != expected:
        raise ConfigError(f"checkpoint {path} is of task {found}, but the config trains {expected}; use that task's config or another checkpoint")
    own = module.state_dict()
    for name, tensor in checkpoint["state_dict"].items():
        if name in own and tuple(own[name].shape) != tuple(tensor.shape):
            raise ConfigError(
                f"checkpoint {path} has {name} of shape {tuple(tensor.shape)} but the config builds {tuple(own[name].shape)}; "
                "use the config the checkpoint was trained with"
            )
    missing = sorted(set(own) - set(checkpoint["state_dict"]))
    if missing:
        raise ConfigError(f"checkpoint {path} lacks {missing[0]} (and {len(missing) - 1} more); use the config the checkpoint was trained with")


def version_of(path: Path, root: Path) -> int | None:
    """N when `path` is `root/version_N/checkpoints/<file>`, else None."""
    try:
        relative = path.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    match = re.fullmatch(r"version_(\d+)", relative.parts[0]) if len(relative.parts) == 3 else None
    return int(match.group(1)) if match and relative.parts[1] == "checkpoints" else None


def find_last_checkpoint(root: Path) -> tuple[Path, int]:
    """The `last.ckpt` of the highest-numbered run under `root` (e.g. lightning_logs/)."""
    runs = []
    for candidate in root.glob("version_*/checkpoints/last.ckpt"):
        version = version_of(candidate, root)
        if version is not None:
            runs.append((version, candidate))
    if not runs:
        raise ConfigError(f"--ckpt_path last: nothing to resume, no {root}/version_*/checkpoints/last.ckpt; start a new run without --ckpt_path")
    version, path = max(runs)
    return path, version
