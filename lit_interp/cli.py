"""`python -m lit_interp`: LightningCLI for training, plus the lightweight top-level help."""

from __future__ import annotations

import gc
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from lit_interp.errors import ConfigError

DEFAULT_MODEL = "lit_interp.tasks.prev_token_digits.PrevTokenDigitsModule"
DEFAULT_DATA = "lit_interp.tasks.prev_token_digits.DigitsDataModule"
LINKED = ("n_ctx", "d_vocab", "first_target_pos")  # set once on the data, passed to the model
# Loggers whose runs live in `<save_dir>/<name>/version_N`, the run directory lit_interp writes into.
VERSIONED_LOGGERS = ("TensorBoardLogger", "CSVLogger")

USAGE = """usage: python -m lit_interp {fit,validate,test,analyze,sweep} [--config CONFIG] [--help] ...

Train toy transformers and reverse-engineer them with TransformerLens.

subcommands:
  fit        train a task (no config: previous-token prediction on digit strings)
  validate   evaluate a checkpoint on the task's fixed validation set (--ckpt_path alone is enough)
  test       evaluate a checkpoint on the task's fixed test set (--ckpt_path alone is enough)
  analyze    report on a checkpoint (attention, head scores, ablations, circuits) or on a run's snapshots
  sweep      many fits as one Optuna study: seeds (--seeds 0-7) or a search (--space FILE); resumable

examples:
  python -m lit_interp fit
  python -m lit_interp fit --config configs/bos_ints_attn_only.yaml --trainer.max_steps=3000
  python -m lit_interp fit --config configs/bos_ints_attn_only.yaml --ckpt_path last
  python -m lit_interp fit --trainer.default_root_dir=runs          (runs in runs/lightning_logs/version_N)
  python -m lit_interp validate --ckpt_path FILE.ckpt
  python -m lit_interp analyze --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt
  python -m lit_interp analyze --run lightning_logs/version_0
  python -m lit_interp fit --help        (every option of fit)
"""


def build_cli_class():
    """Define the LightningCLI subclass; kept in a function so `--help` never imports torch."""
    import torch
    from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
    from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
    from lightning.pytorch.loggers import CSVLogger

    from lit_interp import checkpoints, rundir
    from lit_interp import loggers as logging_utils
    from lit_interp.callbacks import AnalysisSnapshots, ThrottledProgressBar
    from lit_interp.guards import FiniteLossGuard, GracefulInterrupt
    from lit_interp.summary import RunSummary

    class SaveAndLogConfig(SaveConfigCallback):
        """Writes config.yaml into the run directory and shows the resolved config in TensorBoard."""

        def save_config(self, trainer, pl_module, stage: str) -> None:
            experiment = getattr(trainer.logger, "experiment", None)
            if hasattr(experiment, "add_text"):
                text = self.parser.dump(self.config, skip_none=False)
                experiment.add_text("config", "```yaml\n" + text + "\n```", global_step=trainer.global_step)

    class LitInterpCLI(LightningCLI):
        run_dir: Path | None = None
        _lock = None
        _created = False

        @staticmethod
        def subcommands() -> dict[str, set[str]]:
            return {
                "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
                "validate": {"model", "dataloaders", "datamodule"},
                "test": {"model", "dataloaders", "datamodule"},
            }

        def add_arguments_to_parser(self, parser) -> None:
            for name in LINKED:
                parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
            parser.add_lightning_class_args(checkpoints.StepCheckpoint, "checkpoint")
            parser.set_defaults(
                {
                    "model": {"class_path": DEFAULT_MODEL},
                    "data": {"class_path": DEFAULT_DATA},
                    # The same callbacks the digits config turns on (see configs/prev_token_digits.yaml).
                    "trainer.callbacks": [
                        {"class_path": "lit_interp.callbacks.TrainingDynamics"},
                        {
                            "class_path": "lit_interp.callbacks.AnalysisSnapshots",
                            "init_args": {
                                "probe_batch_size": 32,
                                "log_spaced": 10,
                                "every_n_train_steps": 0,
                                "hook_mean_ablation_every_n_snapshots": 10,
                                "expensive_every_n_snapshots": 10,
                                "images_every_n_snapshots": 5,
                            },
                        },
                    ],
                    "checkpoint.filename": "step_{step:07d}",
                    "checkpoint.auto_insert_metric_name": False,
                    "checkpoint.every_n_train_steps": 50,
                    "checkpoint.save_top_k": -1,
                    "checkpoint.save_last": True,
                    "checkpoint.enable_version_counter": False,  # a resumed run refreshes its own last.ckpt
                }
            )

        def _parse_ckpt_path(self) -> None:
            """Resolve `--ckpt_path` (`last` or a file) before anything is built or written."""
            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if not ckpt_path:
                return
            config = self.config[subcommand]
            if ckpt_path == "last":
                if subcommand != "fit":
                    raise ConfigError(f"--ckpt_path last only resumes fit; pass a checkpoint file to {subcommand}")
                path, _ = rundir.find_last_checkpoint(runs_root(config), config.model.class_path)
            else:
                path = Path(ckpt_path)
            checkpoint = checkpoints.load_checkpoint(path)
            checkpoints.validate_schema(checkpoint, path)
            found = checkpoints.checkpoint_module_class(checkpoint)
            if subcommand != "fit" and not self._task_given:
                for name in (found, checkpoint.get("datamodule_hyper_parameters", {}).get("_class_path")):
                    if name and not checkpoints.is_trusted_class(name):
                        raise ConfigError(
                            f"checkpoint {path} names the class {name}, which is neither lit_interp's nor registered; "
                            "pass the run's config with --config, or register its package under the "
                            "lit_interp.tasks entry point"
                        )
                self.config = self.parser.parse_object({subcommand: task_config_of(checkpoint)}, self.config)
                config = self.config[subcommand]
            if found != config.model.class_path:
                raise ConfigError(
                    f"checkpoint {path} is of task {found}, but the config trains {config.model.class_path}; "
                    "use that task's config"
                )
            config.ckpt_path = str(path)
            self._checkpoint = checkpoint

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand]
            trainer = config.trainer
            check_trainer_values(trainer)
            on_gpu = torch.cuda.is_available() and trainer.accelerator not in ("cpu",)
            if trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
                raise ConfigError(
                    f"trainer.accelerator={trainer.accelerator} but this machine has no CUDA device; use "
                    "--trainer.accelerator=cpu or auto"
                )
            if trainer.precision is None:
                trainer.precision = "bf16-mixed" if on_gpu else "32-true"
            if trainer.deterministic is None and not on_gpu:
                # The embedding's backward accumulates in thread order on CPU; deterministic
                # kernels cost ~no speed here and make runs and resumes bit-identical.
                trainer.deterministic = True
            self.run_dir = self._choose_run_dir(config)
            if self.run_dir is not None and config.get("checkpoint") is not None and not config.checkpoint.dirpath:
                config.checkpoint.dirpath = str(self.run_dir / "checkpoints")

        def _choose_run_dir(self, config) -> Path | None:
            """The run directory: the resumed run's, else a new version_N; locked for this process."""
            inherited = os.environ.get(rundir.RUN_DIR_ENV)
            if inherited and int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0"))) != 0:
                run_dir = Path(inherited)  # a rank Lightning started: join the launching process's run
            else:
                root = runs_root(config)
                self._new_roots = [p for p in (root, *root.parents) if not p.exists()]
                version = (
                    checkpoints.version_of(Path(config.ckpt_path), root)
                    if self.subcommand == "fit" and config.ckpt_path
                    else None
                )
                run_dir = root / f"version_{version}" if version is not None else rundir.create_new_run(root)
                self._created = version is None
                self.run_dir = run_dir
                self._lock = rundir.RunLock(run_dir).acquire()
                os.environ[rundir.RUN_DIR_ENV] = str(run_dir)
            place_loggers(
                config.trainer, run_dir, getattr(self, "_checkpoint", None) if self.subcommand == "fit" else None
            )
            return run_dir

        def instantiate_trainer(self, **kwargs):
            checkpoint = getattr(self, "_checkpoint", None)
            if checkpoint is not None:  # before the Trainer, which logs its devices
                checkpoints.check_compatible(checkpoint, self.config[self.subcommand].ckpt_path, self.model)
            if isinstance(getattr(self.model, "model", None), torch.nn.Module) and self.datamodule is not None:
                from lit_interp.tasks.base import check_fits_in_memory

                check_fits_in_memory(self.model.model, self.datamodule.batch_size)
                check_fits_in_memory(self.model.model, self.datamodule.val_batch_size, "data.val_batch_size")
            trainer = {**self.config_init[self.subcommand].trainer, **kwargs}
            callbacks = list(trainer.get("callbacks") or [])
            added = [FiniteLossGuard(), GracefulInterrupt()]  # before the analysis, so it never sees a diverged step
            if trainer.get("enable_progress_bar") is not False and not any(
                isinstance(c, ProgressBar) for c in callbacks
            ):
                added.append(ThrottledProgressBar())  # Lightning's redraws every step
            if trainer.get("logger") and not any(isinstance(c, LearningRateMonitor) for c in callbacks):
                added.append(LearningRateMonitor(logging_interval="step"))
            if self.subcommand == "fit":
                added.append(RunSummary(self.run_dir))
            kwargs["callbacks"] = [*added[:2], *callbacks, *added[2:]]
            if not trainer.get("plugins"):
                kwargs["plugins"] = [checkpoints.AtomicCheckpointIO()]
            created = super().instantiate_trainer(**kwargs)
            for callback in created.callbacks:
                if isinstance(callback, AnalysisSnapshots) and self.run_dir is not None:
                    callback.run_dir = self.run_dir
            if self.subcommand == "fit" and checkpoint is not None and created.is_global_zero:
                for logger in created.loggers:
                    if isinstance(logger, CSVLogger):
                        logging_utils.continue_csv_metrics(logger, purge_step(checkpoint, self.config.fit.trainer))
            return created

        def _before_run(self) -> None:
            checkpoint = getattr(self, "_checkpoint", None)
            if checkpoint is not None and self.subcommand == "fit":
                checkpoints.check_same_world_size(checkpoint, self.config.fit.ckpt_path, self.trainer.world_size)
            startup_done()

        before_fit = before_validate = before_test = _before_run

    return LitInterpCLI, SaveAndLogConfig


def runs_root(config) -> Path:
    """Where runs live: `<save_dir>/<name>` of the first versioned logger, else `<default_root_dir>/lightning_logs`."""
    root = Path(config.trainer.get("default_root_dir") or ".")
    for logger in logger_configs(config.trainer):
        if logger["class_path"].rsplit(".", 1)[-1] in VERSIONED_LOGGERS:
            init_args = logger.get("init_args") or {}
            return Path(init_args.get("save_dir") or root) / (init_args.get("name") or "lightning_logs")
    return root / "lightning_logs"


def logger_configs(trainer_config) -> list:
    logger = trainer_config.get("logger")
    if logger in (None, False, True):
        return []
    loggers = logger if isinstance(logger, list) else [logger]
    return [item for item in loggers if hasattr(item, "get") and item.get("class_path")]


def place_loggers(trainer_config, run_dir: Path, checkpoint: dict | None) -> None:
    """Versioned loggers write into the run directory; a resumed run continues every logger's own run, and
    TensorBoard drops what the interrupted run logged after the checkpoint (`purge_step`), so the
    replayed steps are not logged twice."""
    from jsonargparse import Namespace

    resumed = (checkpoint or {}).get("lit_interp", {}).get("loggers", {})
    for logger in logger_configs(trainer_config):
        name = logger["class_path"].rsplit(".", 1)[-1]
        if logger.get("init_args") is None:
            logger.init_args = Namespace()
        init_args = logger.init_args
        if name in VERSIONED_LOGGERS:
            init_args.save_dir = str(run_dir.parents[1])
            init_args.name = run_dir.parent.name
            init_args.version = run_dir.name
            if name == "TensorBoardLogger" and checkpoint is not None:
                init_args.purge_step = purge_step(checkpoint, trainer_config)
        elif init_args.get("save_dir") == "":  # inherited from the default logger: this logger's own default place
            init_args.save_dir = str(run_dir.parents[1] / ("mlruns" if name == "MLFlowLogger" else ""))
        if name in resumed and name == "MLFlowLogger":
            init_args.run_id = resumed[name]
        elif name in resumed and name == "WandbLogger":
            init_args.id = resumed[name]


def purge_step(checkpoint: dict, trainer_config) -> int | None:
    """The first step a resumed run logs again: its checkpoint's step, or None for a checkpoint at
    max_steps (a finished run: the final save comes after everything it logs, and nothing replays)."""
    step, max_steps = int(checkpoint.get("global_step", 0)), trainer_config.get("max_steps") or -1
    return None if 0 < max_steps <= step else step


def task_config_of(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The model and data of a checkpoint as config values, from the hyperparameters LightningCLI saved."""

    def part(hparams: dict[str, Any], what: str) -> dict[str, Any]:
        if "_class_path" not in hparams:
            raise ConfigError(
                f"the checkpoint does not record its {what} class; pass --config with the run's config.yaml"
            )
        init_args = {
            k: v for k, v in hparams.items() if not k.startswith("_") and not (what == "model" and k in LINKED)
        }
        return {"class_path": hparams["_class_path"], "init_args": init_args}

    return {
        "model": part(dict(checkpoint.get("hyper_parameters", {})), "model"),
        "data": part(dict(checkpoint.get("datamodule_hyper_parameters", {})), "data"),
    }


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


TRAINER_DEFAULTS = {
    "max_steps": 200,
    "max_epochs": -1,
    "val_check_interval": 25,
    "check_val_every_n_epoch": None,
    "log_every_n_steps": 25,
    "precision": None,
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "", "name": "lightning_logs", "default_hp_metric": False},  # "": default_root_dir
    },
}


def run_cli(args: list[str] | None = None):
    import logging

    cli_class, save_config = build_cli_class()
    # The seed is in the run's config.yaml; its log line would sit between a user's command and its one-line error.
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    from lit_interp.tasks.base import SyntheticDataModule, TaskModule

    argv = sys.argv[1:] if args is None else list(args)
    cli_class._task_given = any(arg.split("=")[0] in ("--config", "-c", "--model", "--data") for arg in argv)
    instance = None

    class Tracked(cli_class):
        def __init__(self, *a, **k):
            nonlocal instance
            instance = self
            super().__init__(*a, **k)

    try:
        return Tracked(
            TaskModule,
            SyntheticDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=save_config,
            save_config_kwargs={"overwrite": True},
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=0,
            parser_kwargs={
                "exit_on_error": False,
                "prog": "python -m lit_interp",
                "parser_mode": "omegaconf",
                "allow_abbrev": False,
            },
            args=args,
        )
    except BaseException:
        if instance is not None and instance._created and instance.run_dir is not None and instance._lock is not None:
            instance._lock.release()
            from lit_interp.rundir import remove_if_unused

            remove_if_unused(instance.run_dir)  # a run that failed before writing anything leaves nothing behind
            for created in getattr(instance, "_new_roots", []):
                try:
                    created.rmdir()  # only if empty
                except OSError:
                    break
        raise
    finally:
        if instance is not None and instance._lock is not None:
            instance._lock.release()
        os.environ.pop("LIT_INTERP_RUN_DIR", None)


def user_error_message(error: BaseException) -> str | None:
    """One line for a mistake the user made, or None for a bug (which keeps its traceback)."""
    from jsonargparse import ArgumentError

    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ConfigError):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, UnicodeDecodeError):
        return f"a config file is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8"
    if not isinstance(error, ArgumentError):
        return None
    return argument_error_message(str(error))


def argument_error_message(text: str) -> str:
    """The innermost key and reason of a jsonargparse error, e.g. `model.init_args.lr: expected a float, got 'abc'`."""
    keys = re.findall(r'Parser key "([^"]+)"', text)
    where = ".".join(keys[:1] + [f"init_args.{k}" for k in keys[1:]]) if len(keys) > 1 else (keys[0] if keys else "")
    prefix = f"{where}: " if where else ""
    listed = [line.strip()[2:].strip() for line in text.splitlines() if line.strip().startswith("- ")]
    reasons = [line for line in listed if not line.startswith(("Expected a <class", "Problem with given class_path"))]
    if reasons:  # a class that failed for a reason of its own (e.g. a logger's setup): that reason
        return prefix + reasons[0].split(". ")[0].rstrip(".")
    expected = re.findall(r"Expected a <class '(\w+)'>", text)
    got = re.search(r"Got value: (.+)|Given value: (.+)", text)
    value = (got.group(1) or got.group(2)).strip() if got else None
    expected = [name for name in dict.fromkeys(expected) if name != "NoneType"]
    if expected:
        kinds = " or ".join(f"a {name}" if name[0] not in "aeiou" else f"an {name}" for name in expected)
        return f"{prefix}expected {kinds}, got {value!r}"
    problem = re.search(r"Problem with given class_path '([^']+)':\s*\n\s*(.+)", text)
    if problem:
        return (
            f"{prefix}{problem.group(2).strip()} (class_path {problem.group(1)}); check the name against --print_config"
        )
    text = re.sub(r'Parser key "[^"]+":\s*', "", text)
    noise = ("Does not validate", "Subtypes:", "Errors:", "Given value", "Parser key")
    lines = [
        line.strip(" -") for line in text.splitlines() if line.strip(" -") and not line.strip(" -").startswith(noise)
    ]
    return prefix + (lines[0] if lines else text.strip().splitlines()[0])


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
        if name in LINKED:
            raise ConfigError(
                f"{key} is linked to data.{name}; set data.init_args.{name} instead (it is passed to the model)"
            )


def startup_done() -> None:
    """The end of a `python -m lit_interp` process's start-up (`__main__` turns the collector off for it).

    The objects built so far (the imported libraries, the model) live as long as the process:
    frozen, the collector never walks them again (a full collection over them takes 0.1-0.3 s and
    came every ~0.6 s of a default digits fit). The collector is then turned back on. Where the
    collector was never turned off (tests, notebooks, scripts calling `main`), nothing changes.
    """
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def main(args: list[str] | None = None) -> None:
    try:
        _main(args)
    finally:
        startup_done()


def _main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else args
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return
    if argv[0] == "analyze":
        from lit_interp.analyze import main as analyze

        startup_done()
        return analyze(argv[1:])
    if argv[0] == "sweep":
        from lit_interp.sweep import main as sweep

        startup_done()
        return sweep(argv[1:])
    if argv[0] not in ("fit", "validate", "test"):
        print(
            f"lit_interp: error: unknown subcommand {argv[0]!r}; choose fit, validate, test, analyze or sweep",
            file=sys.stderr,
        )
        sys.exit(2)
    try:
        reject_linked_model_values(argv)
        run_cli(args)
    except Exception as error:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        from lit_interp.guards import NonFiniteLossError

        if isinstance(error, NonFiniteLossError):
            print(f"lit_interp: error: {error}", file=sys.stderr)
            sys.exit(1)
        if isinstance(error, SIGTERMException):
            raise
        if isinstance(error, torch_out_of_memory()) or "can't allocate memory" in str(error):
            print(
                f"lit_interp: error: out of memory ({str(error).splitlines()[0][:200]}); lower "
                "data.init_args.batch_size or the model size",
                file=sys.stderr,
            )
            sys.exit(2)
        message = user_error_message(error)
        if message is None:
            raise
        print(f"lit_interp: error: {message}", file=sys.stderr)
        sys.exit(2)
    except SystemExit as exit_:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exit_, SIGTERMException):
            from lit_interp.guards import INTERRUPTED_BY

            print(
                "lit_interp: interrupted; a resumable last.ckpt was written: continue with --ckpt_path last",
                file=sys.stderr,
            )
            sys.exit(128 + (INTERRUPTED_BY["signal"] or signal.SIGTERM))
        raise


def torch_out_of_memory() -> tuple[type, ...]:
    import torch

    return (torch.OutOfMemoryError, MemoryError)
