"""What a resumed run may change: differences that would mix two configs are refused, the others recorded in the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lit_interp.errors import ConfigError

RESUMES_JSON = "resumes.json"  # every resume of the run: its step and the allowed values it changed
# What a resume may change: how long it trains, what it logs and analyzes, when it validates and checkpoints.
ALLOWED = (
    "config",  # the config files named on the command line (their values are compared key by key)
    "ckpt_path",
    "checkpoint.",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.callbacks",
    "trainer.logger",
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.val_check_interval",
    "trainer.num_sanity_val_steps",
    "trainer.profiler",
    "threads",  # a resumed run keeps its own count unless told otherwise
)
NOT_RECORDED = ("config", "ckpt_path", "checkpoint.dirpath", "trainer.logger.init_args.", "trainer.default_root_dir")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys; lists and tuples kept as JSON-comparable lists."""
    if isinstance(value, dict) and value:
        return {key: item for name, part in value.items() for key, item in flatten(part, f"{prefix}{name}.").items()}
    return {prefix.rstrip("."): json.loads(json.dumps(value, default=str))}


def allowed(key: str) -> bool:
    return any(key == prefix or key.startswith(prefix if prefix.endswith(".") else prefix + ".") for prefix in ALLOWED)


def differences(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ; the model's linked values are the data's (compared there)."""
    from lit_interp.tasks.base import LINKED_ARGUMENTS

    linked = {f"model.init_args.{name}" for name in LINKED_ARGUMENTS}
    keys = [key for key in dict.fromkeys([*old, *new]) if key not in linked]
    return {key: (old.get(key), new.get(key)) for key in keys if old.get(key) != new.get(key)}


def read_run_config(run_dir: Path) -> dict[str, Any] | None:
    """The run's config.yaml flattened, or None when it has none that can be read."""
    import yaml

    from lit_interp.files import read_regular_file

    try:
        config = yaml.safe_load(read_regular_file(run_dir / "config.yaml", 2**24, "run config").decode("utf-8"))
    except (ConfigError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return None
    return flatten(config) if isinstance(config, dict) else None


def checkpoint_task_values(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """model.init_args.* and data.init_args.* as the checkpoint's hyperparameters hold them."""
    from lit_interp.tasks.base import LINKED_ARGUMENTS

    values = {}
    for part, field in (("model", "hyper_parameters"), ("data", "datamodule_hyper_parameters")):
        for key, value in (checkpoint.get(field) or {}).items():
            if not str(key).startswith("_") and not (part == "model" and key in LINKED_ARGUMENTS):
                values[f"{part}.init_args.{key}"] = json.loads(json.dumps(value, default=str))
    return values


def check_resume(run_dir: Path, checkpoint: dict[str, Any], new_config: dict[str, Any]) -> dict[str, Any]:
    """Refuse a resume whose config changes what ran; return the allowed changes to record."""
    new = flatten(new_config)
    old = read_run_config(run_dir)
    changed = differences(old, new) if old is not None else {}
    from_checkpoint = checkpoint_task_values(checkpoint)
    changed |= differences(from_checkpoint, {key: new.get(key) for key in from_checkpoint})
    refused = {key: values for key, values in changed.items() if not allowed(key)}
    if refused:
        listed = "; ".join(
            f"{key}: {_short(old_value)} -> {_short(new_value)}" for key, (old_value, new_value) in refused.items()
        )
        raise ConfigError(
            f"resuming {run_dir} with values that change what it trained ({listed}); resume with the run's own "
            f"values ({run_dir / 'config.yaml'}), or start a new run without --ckpt_path for the new ones"
        )
    return {
        key: {"from": old_value, "to": new_value}
        for key, (old_value, new_value) in changed.items()
        if not key.startswith(NOT_RECORDED)
    }


def record_resume(run_dir: Path, step: int, changes: dict[str, Any]) -> None:
    """Append this resume (its step and what it changed) to `<run>/resumes.json`."""
    from lit_interp.files import write_json

    path = run_dir / RESUMES_JSON
    try:
        history = json.loads(path.read_text()) if path.is_file() else []
    except (OSError, ValueError):
        history = []
    write_json(path, [*(history if isinstance(history, list) else []), {"step": step, "changed": changes}])


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
