"""Config values lit_interp refuses before anything is built: trainer values Lightning would crash on, linked values."""

from __future__ import annotations

from pathlib import Path

from lit_interp.errors import ConfigError
from lit_interp.tasks.base import LINKED_ARGUMENTS


def check_trainer_values(trainer) -> None:
    """Trainer values Lightning would accept and then crash on, or run forever with."""
    interval = trainer.get("val_check_interval")
    if isinstance(interval, (int, float)) and not isinstance(interval, bool) and interval <= 0:
        raise ConfigError(
            f"trainer.val_check_interval={interval} must be positive (steps between validations, or a fraction "
            "of an epoch)"
        )
    devices = trainer.get("devices")
    if isinstance(devices, int) and devices == 0 or devices in ("0", "[]") or devices == []:
        raise ConfigError(
            f"trainer.devices={devices} selects no device; use auto, a positive count such as 1, or a list of "
            "device ids"
        )
    max_steps = trainer.get("max_steps")
    if max_steps is not None and max_steps < 0 and max_steps != -1:
        raise ConfigError(f"trainer.max_steps={max_steps} must be >= 1, or -1 together with --trainer.max_time")
    if max_steps == -1 and not trainer.get("max_time"):
        raise ConfigError(
            "trainer.max_steps=-1 trains forever on this infinite data; set --trainer.max_steps=N or bound the "
            "run with --trainer.max_time=00:01:00:00"
        )
    if max_steps == 0:
        raise ConfigError("trainer.max_steps=0 trains nothing; set --trainer.max_steps >= 1")


def reject_linked_model_values(argv: list[str]) -> None:
    """Linked values live on the data; a model value given too would otherwise be silently dropped."""
    import yaml

    given = [arg.split("=")[0].removeprefix("--") for arg in argv if arg.startswith("--model.")]
    for index, arg in enumerate(argv):
        path = (
            arg.split("=", 1)[1]
            if arg.startswith("--config=")
            else argv[index + 1]
            if arg in ("-c", "--config") and index + 1 < len(argv)
            else None
        )
        if path and Path(path).is_file():
            try:
                text = Path(path).read_bytes().decode("utf-8")
            except UnicodeDecodeError as error:
                raise ConfigError(
                    f"config {path} is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8"
                ) from None
            try:
                model = (yaml.safe_load(text) or {}).get("model") or {}
            except yaml.YAMLError as error:
                mark = getattr(error, "problem_mark", None)
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
                raise ConfigError(
                    f"config {path} is not valid YAML ({getattr(error, 'problem', None) or error}{where}); fix "
                    "its syntax"
                ) from None
            except AttributeError:
                continue  # not a mapping: the parser reports it
            init_args = model.get("init_args") or {} if isinstance(model, dict) else {}
            given += [f"model.init_args.{key}" for key in init_args]
    for key in given:
        name = key.split(".")[-1]
        if name in LINKED_ARGUMENTS:
            raise ConfigError(
                f"{key} is linked to data.{name}; set data.init_args.{name} instead (it is passed to the model)"
            )
