"""`python -m lit_interp`: LightningCLI for training, plus the lightweight top-level help."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from lit_interp.errors import ConfigError

DEFAULT_MODEL = "lit_interp.tasks.prev_token_digits.PrevTokenDigitsModule"
DEFAULT_DATA = "lit_interp.tasks.prev_token_digits.DigitsDataModule"
LINKED = ("n_ctx", "d_vocab", "first_target_pos")  # set once on the data, passed to the model

USAGE = """usage: python -m lit_interp {fit,validate,test,analyze} [--config CONFIG] [--help] ...

Train toy transformers and reverse-engineer them with TransformerLens.

subcommands:
  fit        train a task (no config: previous-token prediction on digit strings)
  validate   evaluate a checkpoint on the task's fixed validation set
  test       evaluate a checkpoint on the task's fixed test set
  analyze    report on a checkpoint (attention, head scores, ablations, circuits) or on a run's snapshots
  sweep      many fits as one Optuna study: seeds (--seeds 0-7) or a search (--space FILE); resumable

examples:
  python -m lit_interp fit
  python -m lit_interp fit --config configs/bos_ints_attn_only.yaml --trainer.max_steps=3000
  python -m lit_interp fit --config configs/bos_ints_attn_only.yaml --ckpt_path last
  python -m lit_interp validate --config configs/bos_ints_attn_only.yaml --ckpt_path FILE.ckpt
  python -m lit_interp analyze --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt
  python -m lit_interp analyze --run lightning_logs/version_0
  python -m lit_interp fit --help        (every option of fit)
"""


def build_cli_class():
    """Define the LightningCLI subclass; kept in a function so `--help` never imports torch."""
    import torch
    from lightning.pytorch.callbacks import ProgressBar
    from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

    from lit_interp import checkpoints
    from lit_interp.callbacks import ThrottledProgressBar
    from lit_interp.tasks.base import SyntheticDataModule, TaskModule

    class SaveAndLogConfig(SaveConfigCallback):
        """Writes config.yaml into the run directory and shows the resolved config in TensorBoard."""

        def save_config(self, trainer, pl_module, stage: str) -> None:
            experiment = getattr(trainer.logger, "experiment", None)
            if hasattr(experiment, "add_text"):
                text = self.parser.dump(self.config, skip_none=False)
                experiment.add_text("config", "```yaml\n" + text + "\n```", global_step=trainer.global_step)

    class LitInterpCLI(LightningCLI):
        @staticmethod
        def subcommands() -> dict[str, set[str]]:
            return {"fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
                    "validate": {"model", "dataloaders", "datamodule"},
                    "test": {"model", "dataloaders", "datamodule"}}

        def add_arguments_to_parser(self, parser) -> None:
            for name in LINKED:
                parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
            parser.add_lightning_class_args(checkpoints.StepCheckpoint, "checkpoint")
            parser.set_defaults({
                "model": {"class_path": DEFAULT_MODEL},
                "data": {"class_path": DEFAULT_DATA},
                # The same analysis the digits config turns on (see configs/prev_token_digits.yaml).
                "trainer.callbacks": [{"class_path": "lit_interp.callbacks.AnalysisSnapshots",
                                       "init_args": {"probe_batch_size": 64}}],
                "checkpoint.filename": "step_{step:07d}",
                "checkpoint.auto_insert_metric_name": False,
                "checkpoint.every_n_train_steps": 200,
                "checkpoint.save_top_k": -1,
                "checkpoint.save_last": True,
                "checkpoint.enable_version_counter": False,  # a resumed run refreshes its own last.ckpt
            })

        def _parse_ckpt_path(self) -> None:
            """Resolve `--ckpt_path` (`last` or a file) before anything is built or written."""
            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if not ckpt_path:
                return
            config = self.config[subcommand]
            root = logs_root(config.trainer)
            if ckpt_path == "last":
                if subcommand != "fit":
                    raise ConfigError(f"--ckpt_path last only resumes fit; pass a checkpoint file to {subcommand}")
                path, version = checkpoints.find_last_checkpoint(root)
            else:
                path = Path(ckpt_path)
                version = checkpoints.version_of(path, root)
            checkpoint = checkpoints.load_checkpoint(path)
            found, expected = checkpoints.checkpoint_module_class(checkpoint), config.model.class_path
            if found is None:
                raise ConfigError(f"checkpoint {path} was not written by lit_interp; pass a checkpoint from a lit_interp run")
            if found != expected:
                raise ConfigError(f"checkpoint {path} is of task {found}, but the config trains {expected}; use that task's config")
            config.ckpt_path = str(path)
            self._checkpoint = checkpoint
            if subcommand == "fit" and version is not None:
                set_logger_version(config.trainer, version)  # continue the run in its own version directory

        def before_instantiate_classes(self) -> None:
            trainer = self.config[self.subcommand].trainer
            on_gpu = torch.cuda.is_available() and trainer.accelerator not in ("cpu",)
            if trainer.precision is None:
                trainer.precision = "bf16-mixed" if on_gpu else "32-true"
            if trainer.deterministic is None and not on_gpu:
                # The embedding's backward accumulates in thread order on CPU; deterministic
                # kernels cost ~no speed here and make runs and resumes bit-identical.
                trainer.deterministic = True

        def instantiate_trainer(self, **kwargs):
            trainer = {**self.config_init[self.subcommand].trainer, **kwargs}
            callbacks = list(trainer.get("callbacks") or [])
            if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
                kwargs["callbacks"] = [*callbacks, ThrottledProgressBar()]  # Lightning's redraws every step
            return super().instantiate_trainer(**kwargs)

        def _check_checkpoint_shapes(self) -> None:
            checkpoint = getattr(self, "_checkpoint", None)
            if checkpoint is not None:
                checkpoints.check_compatible(checkpoint, self.config[self.subcommand].ckpt_path, self.model)

        before_fit = before_validate = before_test = _check_checkpoint_shapes

    return LitInterpCLI, SaveAndLogConfig


def logs_root(trainer_config) -> Path:
    """Where TensorBoard runs live: `<save_dir>/<name>` of the configured logger."""
    logger = trainer_config.get("logger")
    init_args = logger.get("init_args", {}) if hasattr(logger, "get") else {}
    return Path(init_args.get("save_dir") or ".") / (init_args.get("name") or "lightning_logs")


def set_logger_version(trainer_config, version: int) -> None:
    logger = trainer_config.get("logger")
    if not hasattr(logger, "get") or "init_args" not in logger:
        raise ConfigError("resuming in the same run directory needs the default TensorBoardLogger; remove trainer.logger from the config")
    logger.init_args.version = version


TRAINER_DEFAULTS = {
    "max_steps": 200,
    "max_epochs": -1,
    "val_check_interval": 25,
    "check_val_every_n_epoch": None,
    "log_every_n_steps": 25,
    "precision": None,
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": ".", "name": "lightning_logs", "default_hp_metric": False},
    },
}


def run_cli(args: list[str] | None = None):
    cli_class, save_config = build_cli_class()
    from lit_interp.tasks.base import SyntheticDataModule, TaskModule

    return cli_class(
        TaskModule,
        SyntheticDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=save_config,
        save_config_kwargs={"overwrite": True},
        trainer_defaults=TRAINER_DEFAULTS,
        seed_everything_default=0,
        parser_kwargs={"exit_on_error": False, "prog": "python -m lit_interp"},
        args=args,
    )


def user_error_message(error: BaseException) -> str | None:
    """One line for a mistake the user made, or None for a bug (which keeps its traceback)."""
    from jsonargparse import ArgumentError

    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ConfigError):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    if not isinstance(error, ArgumentError):
        return None
    text = str(error)
    key = re.search(r'Parser key "([^"]+)"', text)
    problem = re.search(r"Problem with given class_path '([^']+)':\s*\n\s*(.+)", text)
    where = f"{key.group(1)}: " if key else ""
    text = re.sub(r'Parser key "[^"]+":\s*', "", text)
    if problem:
        return f"{where}{problem.group(2).strip()} (class_path {problem.group(1)}); check the name against --print_config"
    noise = ("Does not validate", "Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>", "Parser key")
    lines = [line.strip(" -") for line in text.splitlines() if line.strip(" -") and not line.strip(" -").startswith(noise)]
    return where + (lines[0] if lines else text.strip().splitlines()[0])


def reject_linked_model_values(argv: list[str]) -> None:
    """Linked values live on the data; a model value given too would otherwise be silently dropped."""
    import yaml

    given = [arg.split("=")[0].removeprefix("--") for arg in argv if arg.startswith("--model.")]
    for index, arg in enumerate(argv):
        path = arg.split("=", 1)[1] if arg.startswith("--config=") else argv[index + 1] if arg in ("-c", "--config") and index + 1 < len(argv) else None
        if path and Path(path).is_file():
            try:
                model = (yaml.safe_load(Path(path).read_text()) or {}).get("model") or {}
            except yaml.YAMLError as error:
                mark = getattr(error, "problem_mark", None)
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
                raise ConfigError(f"config {path} is not valid YAML ({getattr(error, 'problem', None) or error}{where}); fix its syntax") from None
            except AttributeError:
                continue  # not a mapping: the parser reports it
            init_args = model.get("init_args") or {} if isinstance(model, dict) else {}
            given += [f"model.init_args.{key}" for key in init_args]
    for key in given:
        name = key.split(".")[-1]
        if name in LINKED:
            raise ConfigError(f"{key} is linked to data.{name}; set data.init_args.{name} instead (it is passed to the model)")


def main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else args
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return
    if argv[0] == "analyze":
        from lit_interp.analyze import main as analyze

        return analyze(argv[1:])
    if argv[0] == "sweep":
        from lit_interp.sweep import main as sweep

        return sweep(argv[1:])
    if argv[0] not in ("fit", "validate", "test"):
        print(f"lit_interp: error: unknown subcommand {argv[0]!r}; choose fit, validate, test or analyze", file=sys.stderr)
        sys.exit(2)
    try:
        reject_linked_model_values(argv)
        run_cli(args)
    except Exception as error:
        message = user_error_message(error)
        if message is None:
            raise
        print(f"lit_interp: error: {message}", file=sys.stderr)
        sys.exit(2)
