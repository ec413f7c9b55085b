"""A task rebuilt from a checkpoint alone: the trust rule for the classes a file names, and the module and data.

A checkpoint never makes lit_interp import arbitrary code: every class path read from a file is
checked against the trust rule (`is_trusted_class`) before anything imports it.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

from lit_interp.errors import ConfigError

CLASS_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
ENTRY_POINT_GROUP = "lit_interp.tasks"


def trusted_prefixes() -> list[str]:
    """lit_interp, and the packages registered under the `lit_interp.tasks` entry point."""
    from importlib.metadata import entry_points

    return ["lit_interp", *(entry.value.split(":")[0] for entry in entry_points(group=ENTRY_POINT_GROUP))]


def is_trusted_class(name: Any, trusted: tuple[str, ...] = ()) -> bool:
    """lit_interp's own classes, those of packages registered under the `lit_interp.tasks` entry point
    (`[options.entry_points] lit_interp.tasks = my_tasks = my_tasks`), and the names in `trusted`."""
    if not isinstance(name, str) or not CLASS_PATH.fullmatch(name):
        return False
    return name in trusted or any(name.startswith(prefix + ".") for prefix in trusted_prefixes())


def run_config_hint(path: Path) -> str:
    """The config.yaml of the run a checkpoint is from (`<run>/checkpoints/x.ckpt`), for an error's fix."""
    path = Path(path)
    return str(path.parent.parent / "config.yaml") if path.parent.name == "checkpoints" else "the run's config.yaml"


def untrusted_class_error(path: Path, what: str, name: Any) -> ConfigError:
    shown = name if isinstance(name, str) and CLASS_PATH.fullmatch(name) else repr(name)[:200]  # one line, always
    return ConfigError(
        f"checkpoint {path} names {what} class {shown}, which is neither lit_interp's nor registered; pass "
        f"--config {run_config_hint(path)} or register the package under the lit_interp.tasks entry point"
    )


def import_class(name: Any, base: type, what: str, path: Path, trusted: tuple[str, ...] = ()) -> type:
    """The class a checkpoint names, imported only when trusted (lit_interp, a package registered under the
    `lit_interp.tasks` entry point, or a class named in the `--config` the user passed)."""
    if not is_trusted_class(name, trusted):
        raise untrusted_class_error(path, what, name)
    module_name, _, class_name = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise ConfigError(
            f"checkpoint {path} names {what} class {name}, which cannot be imported here; install "
            "the package that defines it"
        ) from None
    if not (isinstance(found, type) and issubclass(found, base)):
        raise ConfigError(
            f"checkpoint {path} names {name} as its {what}, which is not a {base.__name__}; pass "
            "a checkpoint from a lit_interp run"
        )
    return found


def config_classes(config: Path | None) -> tuple[str, ...]:
    """The model and data class paths a user's config names: classes the user chose to trust."""
    if config is None:
        return ()
    import yaml

    from lit_interp.files import read_regular_file

    try:
        values = yaml.safe_load(read_regular_file(config, 2**24, "--config").decode("utf-8")) or {}
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError) as error:
        raise ConfigError(
            f"--config {config} cannot be read as YAML ({type(error).__name__}); pass the run's config.yaml"
        ) from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {config} is not a mapping of config keys; pass the run's config.yaml")
    names = [
        values.get(key, {}).get("class_path") if isinstance(values.get(key), dict) else None
        for key in ("model", "data")
    ]
    return tuple(name for name in names if isinstance(name, str))


def init_args(hyper_parameters: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments from saved hyperparameters (LightningCLI's `_class_path`, `_instantiator` dropped)."""
    return {key: value for key, value in hyper_parameters.items() if not str(key).startswith("_")}


def datamodule_class_name(checkpoint: dict[str, Any], module_class: type) -> str | None:
    """From LightningCLI's `_class_path`, else the task file's datamodule whose state the checkpoint holds."""
    from lit_interp.tasks.base import SyntheticDataModule

    named = checkpoint.get("datamodule_hyper_parameters", {}).get("_class_path")
    if named:
        return named
    task_file = sys.modules[module_class.__module__]
    for candidate in vars(task_file).values():
        if (
            isinstance(candidate, type)
            and issubclass(candidate, SyntheticDataModule)
            and candidate.__qualname__ in checkpoint
        ):
            return f"{candidate.__module__}.{candidate.__qualname__}"
    return None


def rebuild(checkpoint: dict[str, Any], path: Path, trusted: tuple[str, ...] = ()):
    """(module with the checkpoint's weights, datamodule), both built from the checkpoint's hyperparameters."""
    from lit_interp import checkpoints
    from lit_interp.tasks.base import SyntheticDataModule, TaskModule

    name = checkpoints.checkpoint_module_class(checkpoint)
    if name is None or "hyper_parameters" not in checkpoint:
        raise ConfigError(
            f"checkpoint {path} was not written by lit_interp (no module class or "
            "hyperparameters); pass a checkpoint from a lit_interp run"
        )
    module_class = import_class(name, TaskModule, "module", path, trusted)
    data_name = datamodule_class_name(checkpoint, module_class)
    if data_name is None or "datamodule_hyper_parameters" not in checkpoint:
        raise ConfigError(
            f"checkpoint {path} does not record its datamodule; pass a checkpoint written by lit_interp fit"
        )
    datamodule_class = import_class(data_name, SyntheticDataModule, "datamodule", path, trusted)
    try:
        module = module_class(**init_args(checkpoint["hyper_parameters"]))
        datamodule = datamodule_class(**init_args(checkpoint["datamodule_hyper_parameters"]))
    except TypeError as error:
        raise ConfigError(
            f"checkpoint {path} has hyperparameters {name} does not take ({error}); analyze it "
            "with the lit_interp version that trained it"
        ) from None
    checkpoints.check_compatible(checkpoint, path, module)
    module.load_state_dict(checkpoint["state_dict"], strict=False)  # check_compatible has matched every weight
    return module, datamodule


def task_config_of(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """The model and data of a checkpoint as config values (from the hyperparameters LightningCLI saved),
    for `validate`/`test` given only a checkpoint; both class paths must pass the trust rule first."""
    from lit_interp.tasks.base import LINKED_ARGUMENTS

    def part(hparams: dict[str, Any], what: str) -> dict[str, Any]:
        if "_class_path" not in hparams:
            raise ConfigError(
                f"checkpoint {path} does not record its {what} class; pass --config {run_config_hint(path)}"
            )
        if not is_trusted_class(hparams["_class_path"]):
            raise untrusted_class_error(path, what, hparams["_class_path"])
        arguments = {
            key: value for key, value in init_args(hparams).items() if not (what == "model" and key in LINKED_ARGUMENTS)
        }
        return {"class_path": hparams["_class_path"], "init_args": arguments}

    return {
        "model": part(dict(checkpoint.get("hyper_parameters", {})), "model"),
        "data": part(dict(checkpoint.get("datamodule_hyper_parameters", {})), "data"),
    }
