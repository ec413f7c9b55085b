"""Config values lit_interp refuses before anything is built or written: config files, trainer values, seeds."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lit_interp.errors import ConfigError
from lit_interp.files import read_regular_file
from lit_interp.tasks.base import LINKED_ARGUMENTS

MAX_CONFIG_BYTES = 2**24
SECRET_INTERPOLATION = re.compile(r"\$\{\s*oc\.env\s*:")
PRECISIONS = ("32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "bf16-true", "16-true")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "ddp_fork", "ddp_notebook")
MAX_SEED = 2**32 - 1
MAX_PATH_COMPONENT = 255


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def config_paths(argv: list[str]) -> list[str]:
    """The files given with `--config FILE`, `--config=FILE` or `-c FILE`."""
    paths = []
    for index, arg in enumerate(argv):
        if arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
        elif arg in ("-c", "--config") and index + 1 < len(argv):
            paths.append(argv[index + 1])
    return paths


def read_config_file(path: str) -> Any:
    """A config file's YAML: a regular file (a FIFO would hang the parser), UTF-8, valid YAML, no `${oc.env:...}`."""
    import yaml

    try:
        text = read_regular_file(Path(path), MAX_CONFIG_BYTES, "config").decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"config {path} is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8"
        ) from None
    if SECRET_INTERPOLATION.search(text):
        raise ConfigError(
            f"config {path} reads an environment variable (${{oc.env:...}}), which would be written into the run's "
            "config.yaml; pass the value itself, or on the command line"
        )
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"config {path} is not valid YAML ({getattr(error, 'problem', None) or error}{where}); fix its syntax"
        ) from None
    except RecursionError:
        raise ConfigError(f"config {path} is nested too deeply; it is not a lit_interp config") from None


def check_command_line(argv: list[str]) -> None:
    """Every config file readable and safe, no secret interpolation, no linked value given on the model."""
    if any(SECRET_INTERPOLATION.search(arg) for arg in argv):
        raise ConfigError(
            "an option reads an environment variable (${oc.env:...}), which would be written into the run's "
            "config.yaml; pass the value itself"
        )
    given = [arg.split("=")[0].removeprefix("--") for arg in argv if arg.startswith("--model.")]
    for path in config_paths(argv):
        if not Path(path).exists():
            continue  # the parser says that a file is missing
        config = read_config_file(path)
        model = config.get("model") if isinstance(config, dict) else None
        init_args = model.get("init_args") if isinstance(model, dict) else None
        given += [f"model.init_args.{key}" for key in init_args or {}] if isinstance(init_args, dict) else []
    for key in given:
        name = key.split(".")[-1]
        if name in LINKED_ARGUMENTS:
            raise ConfigError(
                f"{key} is linked to data.{name}; set data.init_args.{name} instead (it is passed to the model)"
            )


def _devices_ok(value: Any) -> bool:
    """auto, a positive count, or (with CUDA) -1 or a list of GPU ids; the CPU takes only a count."""
    import torch

    if value in (None, "auto") or (is_int(value) and value >= 1):
        return True
    if isinstance(value, str) and re.fullmatch(r"[1-9]\d*", value.strip()):
        return True
    gpu_ids = isinstance(value, list) and bool(value) and all(is_int(item) and item >= 0 for item in value)
    gpu_ids |= isinstance(value, str) and bool(re.fullmatch(r"\d+(,\d+)*,", value.strip()))
    return torch.cuda.is_available() and (gpu_ids or value in (-1, "-1"))


def _interval_ok(value: Any) -> bool:
    """An integer number of steps >= 1, or a fraction of an epoch in (0, 1] (an epoch is endless here: refused)."""
    return value is None or (is_int(value) and value >= 1) or (isinstance(value, str) and _duration_ok(value))


def _duration_ok(value: Any) -> bool:
    """`DD:HH:MM:SS` or a mapping of days, hours, minutes, seconds."""
    if value is None:
        return True
    if isinstance(value, str):
        return bool(re.fullmatch(r"\d+:\d{1,2}:\d{1,2}:\d{1,2}", value.strip()))
    return isinstance(value, dict) and set(value) <= {"days", "hours", "minutes", "seconds"}


def _limit_ok(value: Any) -> bool:
    return value is None or (is_int(value) and value >= 0) or (is_number(value) and 0 <= value <= 1)


# trainer key -> (is the value acceptable, the fix to name)
TRAINER_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "devices": (_devices_ok, "use auto or a positive count such as 1 (GPU ids such as [0] need a CUDA device)"),
    "accelerator": (lambda v: v is None or v in ACCELERATORS, f"use one of {', '.join(ACCELERATORS)}"),
    "strategy": (lambda v: v is None or v in STRATEGIES, f"use one of {', '.join(STRATEGIES)}"),
    "num_nodes": (lambda v: v is None or (is_int(v) and v >= 1), "use a positive number of nodes"),
    "precision": (lambda v: v is None or str(v) in PRECISIONS, f"use one of {', '.join(PRECISIONS)} or null"),
    "val_check_interval": (_interval_ok, "use a number of training steps >= 1 between validations"),
    "accumulate_grad_batches": (lambda v: v is None or (is_int(v) and v >= 1), "use 1 (no accumulation) or more"),
    "gradient_clip_val": (lambda v: v is None or (is_number(v) and v >= 0), "use a positive norm, or null"),
    "gradient_clip_algorithm": (lambda v: v in (None, "norm", "value"), "use norm or value"),
    "log_every_n_steps": (lambda v: v is None or (is_int(v) and v >= 1), "use a number of steps >= 1"),
    "max_time": (_duration_ok, "write DD:HH:MM:SS, e.g. 00:01:00:00"),
    "fast_dev_run": (lambda v: v is None or isinstance(v, bool) or (is_int(v) and v >= 0), "use true or a count"),
    "limit_val_batches": (_limit_ok, "use a count >= 0 or a fraction in [0, 1]"),
    "limit_test_batches": (_limit_ok, "use a count >= 0 or a fraction in [0, 1]"),
    "limit_train_batches": (_limit_ok, "use a count >= 0 or a fraction in [0, 1]"),
}


def check_trainer_values(trainer) -> None:
    """Trainer values Lightning would refuse with a traceback, crash on mid-run, or run forever with."""
    for key, (acceptable, fix) in TRAINER_CHECKS.items():
        value = trainer.get(key)
        if not acceptable(value):
            raise ConfigError(f"trainer.{key}={_shown(value)} is not accepted; {fix}")
    max_steps = trainer.get("max_steps")
    if max_steps is not None and (not is_int(max_steps) or max_steps < -1 or max_steps == 0):
        raise ConfigError(f"trainer.max_steps={_shown(max_steps)} must be >= 1, or -1 together with --trainer.max_time")
    if max_steps == -1 and not trainer.get("max_time"):
        raise ConfigError(
            "trainer.max_steps=-1 trains forever on this infinite data; set --trainer.max_steps=N or bound the "
            "run with --trainer.max_time=00:01:00:00"
        )
    check_path_length(trainer.get("default_root_dir"), "trainer.default_root_dir")


def check_checkpoint_values(checkpoint) -> None:
    every = checkpoint.get("every_n_train_steps") if checkpoint is not None else None
    if every is not None and (not is_int(every) or every < 0):
        raise ConfigError(
            f"checkpoint.every_n_train_steps={_shown(every)} must be >= 0 (0: only at the end and on Ctrl-C)"
        )


def check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or seed is None:
        return
    if not is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed_everything={_shown(seed)} must be an integer from 0 to {MAX_SEED} (or true, false)")


def check_path_length(path: Any, what: str) -> None:
    if path is None:
        return
    too_long = [part for part in Path(str(path)).parts if len(part.encode()) > MAX_PATH_COMPONENT]
    if too_long or len(str(path).encode()) > 4000:
        raise ConfigError(
            f"{what} has a name longer than the filesystem allows ({len(max(too_long, key=len, default=str(path)))} "
            f"characters); use names of at most {MAX_PATH_COMPONENT}"
        )


def _shown(value: Any) -> str:
    # older jsonargparse parses --x=-1 for a float-typed key as -1.0: show what the user typed
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."
