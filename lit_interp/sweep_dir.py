"""The layout of a sweep directory: `sweep.json`, and one `trial_NNNN/` per trial holding its run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lit_interp.errors import ConfigError
from lit_interp.files import read_regular_file

SWEEP_JSON = "sweep.json"  # the study's name and storage and the command's definition
MAX_SWEEP_JSON_BYTES = 2**20


def trial_dir(sweep_directory: Path, number: int) -> Path:
    return Path(sweep_directory) / f"trial_{number:04d}"


def trial_run_dir(trial_directory: Path) -> Path:
    """Each trial is one fit with `--trainer.default_root_dir=<trial dir>`: its run is version_0 there."""
    return Path(trial_directory) / "lightning_logs" / "version_0"


def read_sweep_info(sweep_directory: Path) -> dict[str, Any] | None:
    """What `sweep` recorded in `sweep.json`, or None when the directory holds none (not a sweep)."""
    path = Path(sweep_directory) / SWEEP_JSON
    if not path.exists() and not path.is_symlink():
        return None
    try:
        info = json.loads(read_regular_file(path, MAX_SWEEP_JSON_BYTES, "sweep record").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ConfigError(f"{path} is not valid JSON; it was not written by lit_interp sweep") from None
    if not isinstance(info, dict) or not all(isinstance(info.get(key), str) for key in ("study_name", "storage")):
        raise ConfigError(f"{path} lacks a study_name and storage; it was not written by lit_interp sweep")
    return info
