"""The layout of a sweep directory: `sweep.json` (its study, and the directory's own id), and one `trial_NNNN/` per
trial holding its run; which of a study's trials ran in which directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lit_interp.errors import ConfigError
from lit_interp.files import read_regular_file, write_json

SWEEP_JSON = "sweep.json"  # the study's name and storage, the command's definition, and the directory's id
MAX_SWEEP_JSON_BYTES = 2**20
# A trial's user attribute naming where it runs: {"directory_id": its sweep directory's (from sweep.json), "host": ...}.
WORKER, DIRECTORY_ID, HOST = "worker", "directory_id", "host"
# Optuna's system attribute on a retry of a heartbeat-stale trial: the number of the trial first retried.
RETRY_OF = "failed_trial"


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


def write_sweep_info(sweep_directory: Path, info: dict[str, Any]) -> None:
    write_json(Path(sweep_directory) / SWEEP_JSON, info)


def home_number(trial: Any) -> int:
    """The number of the trial directory an Optuna trial runs in: a retry's is that of the trial it retries."""
    return int(trial.system_attrs.get(RETRY_OF, trial.number))


def ran_in(trial: Any, directory_id: str | None) -> bool:
    """Whether the trial was claimed by a worker of the sweep directory with this id (a trial claimed before
    directories had ids counts for every directory)."""
    recorded = trial.user_attrs.get(WORKER, {}).get(DIRECTORY_ID)
    return recorded is None or directory_id is None or recorded == directory_id
