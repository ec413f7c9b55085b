"""`python -m lit_interp fit|validate|test`: lit_interp's LightningCLI (run directories, resume, precision, errors)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from lit_interp import checkpoints, rundir, threads
from lit_interp import loggers as logging_utils
from lit_interp.callbacks import AnalysisSnapshots, ThrottledProgressBar
from lit_interp.commands.arguments import USER_ERROR_EXIT, fail
from lit_interp.commands.checks import check_checkpoint_values, check_command_line, check_seed, check_trainer_values
from lit_interp.commands.messages import user_error_message
from lit_interp.commands.placement import BRANCHED_FROM_JSON, checkpoint_progress, place_loggers, purge_step, runs_root
from lit_interp.commands.resume import check_resume, record_resume
from lit_interp.errors import ConfigError
from lit_interp.files import write_json
from lit_interp.guards import INTERRUPTED_BY, FiniteLossGuard, GracefulInterrupt, NonFiniteLossError
from lit_interp.memory import require_batch_fits
from lit_interp.rebuild import is_trusted_class, task_config_of, untrusted_class_error
from lit_interp.startup import startup_done
from lit_interp.summary import RunSummary
from lit_interp.tasks.base import LINKED_ARGUMENTS, SyntheticDataModule, TaskModule

DEFAULT_CONFIG = "prev_token_digits.yaml"  # what `fit` trains without a config, in lit_interp/configs/
TASK_OPTIONS = ("--config", "-c", "--model", "--data", "--model.class_path", "--data.class_path")
# lit_interp's own trainer defaults for every task (a config's trainer block comes on top).
TRAINER_DEFAULTS = {
    "max_epochs": -1,
    "enable_model_summary": False,  # its FLOPs column reads 0 here; one line at the start says what trains
    "check_val_every_n_epoch": None,
    "precision": None,
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "", "name": "lightning_logs", "default_hp_metric": False},  # "": default_root_dir
    },
}

# lit_interp's checkpoint layout: checkpoints/step_<7 digits>.ckpt kept, and a last.ckpt a resumed run refreshes.
CHECKPOINT_DEFAULTS = {
    "checkpoint.filename": checkpoints.STEP_CHECKPOINT_FILENAME,
    "checkpoint.auto_insert_metric_name": False,
    "checkpoint.save_top_k": -1,
    "checkpoint.save_last": True,
    "checkpoint.enable_version_counter": False,
}


def default_config_path() -> Path:
    return Path(str(files("lit_interp") / "configs" / DEFAULT_CONFIG))


@cache
def default_config() -> dict[str, Any]:
    return yaml.safe_load(default_config_path().read_text())


def flatten(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    """`{"trainer": {"max_steps": 200}}` -> `{"trainer.max_steps": 200}` (one level: what `set_defaults` takes)."""
    return {f"{prefix}.{key}": value for key, value in values.items()}


def config_defaults(task_given: bool) -> dict[str, Any]:
    """The parser's defaults from the default config: all of it, or (a task given) its trainer and checkpoints only."""
    config = default_config()
    defaults = {"seed_everything": config["seed_everything"]}
    defaults |= (
        CHECKPOINT_DEFAULTS | flatten(config["trainer"], "trainer") | flatten(config["checkpoint"], "checkpoint")
    )
    if not task_given:  # a user's classes keep their own defaults: never the default task's init_args
        defaults |= {"model": config["model"], "data": config["data"]}
    return defaults


class SaveAndLogConfig(SaveConfigCallback):
    """Writes config.yaml into the run directory and shows the resolved config in TensorBoard (fit only:
    validate and test evaluate a checkpoint and write no run)."""

    @override
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            super().setup(trainer, pl_module, stage)

    @override
    def save_config(self, trainer, pl_module, stage: str) -> None:
        experiment = getattr(trainer.logger, "experiment", None)
        if hasattr(experiment, "add_text"):
            text = self.parser.dump(self.config, skip_none=False)
            experiment.add_text("config", "```yaml\n" + text + "\n```", global_step=trainer.global_step)


class LitInterpCLI(LightningCLI):
    """LightningCLI with lit_interp's run directories, resume rules, precision choice, checks and callbacks.

    The whole command runs inside `__init__` (LightningCLI's way); a command that fails before writing
    anything removes the run directory it made, and the run lock is released however it ends.
    """

    def __init__(self, args: list[str] | None = None):
        argv = sys.argv[1:] if args is None else list(args)
        self.task_given = any(arg.split("=")[0] in TASK_OPTIONS for arg in argv)
        self.run_dir: Path | None = None
        self.checkpoint: dict[str, Any] | None = None
        self.branched_from: dict[str, Any] | None = None  # a rewind: the run and step this new version continues
        self.resume_changes: dict[str, Any] = {}  # the allowed config changes of a resume, recorded in the run
        self.thread_choice: threads.ThreadChoice | None = None
        self._lock: rundir.RunLock | None = None
        self._created: list[Path] = []  # directories this command made, removed again if it fails before writing
        try:
            super().__init__(
                TaskModule,
                SyntheticDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                save_config_callback=SaveAndLogConfig,
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
            self._discard_unused_run()
            raise
        finally:
            if self._lock is not None:
                self._lock.release()
            os.environ.pop(rundir.RUN_DIR_ENV, None)

    @staticmethod
    @override
    def subcommands() -> dict[str, set[str]]:
        return {
            "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
            "validate": {"model", "dataloaders", "datamodule"},
            "test": {"model", "dataloaders", "datamodule"},
        }

    @override
    def add_arguments_to_parser(self, parser) -> None:
        for name in LINKED_ARGUMENTS:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        parser.add_lightning_class_args(checkpoints.StepCheckpoint, "checkpoint")
        parser.add_argument(
            "--threads",
            type=int | None,
            default=None,
            help=f"intra-op CPU threads (default: chosen from a step's work; or set {threads.ENVIRONMENT})",
        )
        parser.set_defaults(config_defaults(self.task_given))

    @override
    def parse_arguments(self, parser, args) -> None:
        """Parse, then refuse the values Lightning would turn into a traceback (before any seed is set)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand is not None:
            config = self.config[subcommand]
            check_seed(config.get("seed_everything"))
            check_trainer_values(config.trainer)
            check_checkpoint_values(config.get("checkpoint"))

    @override
    def _parse_ckpt_path(self) -> None:
        """Resolve `--ckpt_path` (`last` or a file) before anything is built or written (replaces Lightning's,
        which would import the class a checkpoint names before anything checks it)."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path:
            return
        config = self.config[subcommand]
        if ckpt_path == "last":
            if subcommand != "fit":
                raise ConfigError(f"--ckpt_path last only resumes fit; pass a checkpoint file to {subcommand}")
            path, _ = checkpoints.find_last_checkpoint(runs_root(config), config.model.class_path)
        else:
            path = Path(ckpt_path)
        checkpoint = checkpoints.load_checkpoint(path)
        checkpoints.validate_schema(checkpoint, path)
        found = checkpoints.checkpoint_module_class(checkpoint)
        if subcommand != "fit" and not self.task_given:
            self._check_trusted(checkpoint, path)
            self.config = self.parser.parse_object({subcommand: task_config_of(checkpoint, path)}, self.config)
            config = self.config[subcommand]
        if found != config.model.class_path:
            raise ConfigError(
                f"checkpoint {path} is of task {found}, but the config trains {config.model.class_path}; "
                "use that task's config"
            )
        config.ckpt_path = str(path)
        self.checkpoint = checkpoint

    @staticmethod
    def _check_trusted(checkpoint: dict[str, Any], path: Path) -> None:
        named = {"module": checkpoints.checkpoint_module_class(checkpoint)}
        named["datamodule"] = checkpoint.get("datamodule_hyper_parameters", {}).get("_class_path")
        for what, name in named.items():
            if name is not None and not is_trusted_class(name):
                raise untrusted_class_error(path, what, name)

    @override
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        trainer = config.trainer
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
        if self.subcommand != "fit":
            # An evaluation prints its metrics and writes nothing: no run directory, no logger, and the
            # checkpoint callback pointed at the checkpoint's own directory (it saves nothing here).
            trainer.logger = False
            if config.get("checkpoint") is not None and config.ckpt_path:
                config.checkpoint.dirpath = str(Path(config.ckpt_path).parent)
            return
        self.run_dir = self._choose_run_dir(config)
        if self.checkpoint is not None:
            parent = Path(self.branched_from["run"]) if self.branched_from else self.run_dir
            self.resume_changes = check_resume(parent, self.checkpoint, config.as_dict())
        if config.get("checkpoint") is not None and not config.checkpoint.dirpath:
            config.checkpoint.dirpath = str(self.run_dir / "checkpoints")

    def _choose_run_dir(self, config) -> Path:
        """The run directory: the resumed run's, else a new version_N; locked for this process.

        Only the run's first process (global rank 0) makes and locks it. Another joins it: a rank Lightning started
        here inherits its path; the first process of another node (NODE_RANK, SLURM_PROCID, ... non-zero) takes the
        resumed checkpoint's run, or for a new run the version rank 0 is making (its guess only: every file of a run
        is written by rank 0, into the directory rank 0 broadcasts).
        """
        inherited = os.environ.get(rundir.RUN_DIR_ENV)
        resumed = self.subcommand == "fit" and config.ckpt_path
        root = runs_root(config)
        version = checkpoints.version_of(Path(config.ckpt_path), root) if resumed else None
        version = None if version is not None and self._rewinds(root / f"version_{version}") else version
        if not rundir.owns_run():
            if inherited:
                run_dir = Path(inherited)
            else:
                run_dir = root / f"version_{version}" if version is not None else rundir.next_version(root)
        else:
            new_roots = [path for path in (root, *root.parents) if not path.exists()]
            if version is None:
                run_dir = rundir.create_new_run(root)
                self._created = [run_dir, *new_roots]
            else:
                run_dir = root / f"version_{version}"
            self._lock = rundir.RunLock(run_dir).acquire()
        os.environ[rundir.RUN_DIR_ENV] = str(run_dir)
        place_loggers(config.trainer, run_dir, self.checkpoint if self.subcommand == "fit" else None)
        return run_dir

    def _rewinds(self, run_dir: Path) -> bool:
        """Whether the checkpoint is behind where its run went on to: resuming it in place would overwrite the run's
        later checkpoints and snapshots with another history, so it branches into a new version instead."""
        step = self.checkpoint["global_step"]
        reached = checkpoint_progress(run_dir, Path(self.config.fit.ckpt_path))
        if reached <= step:
            return False
        self.branched_from = {"run": str(run_dir), "checkpoint": self.config.fit.ckpt_path, "step": step}
        self.branched_from["parent_reached_step"] = reached
        return True

    def _discard_unused_run(self) -> None:
        """A run that failed before writing anything leaves nothing behind (nor the directories made for it)."""
        if not self._created:
            return
        if self._lock is not None:
            self._lock.release()
        run_dir, *new_roots = self._created
        rundir.remove_if_unused(run_dir)
        for created in new_roots:
            try:
                created.rmdir()  # only if empty
            except OSError:
                break

    @override
    def instantiate_trainer(self, **kwargs):
        if self.checkpoint is not None:  # before the Trainer, which logs its devices
            checkpoints.check_compatible(self.checkpoint, self.config[self.subcommand].ckpt_path, self.model)
        if isinstance(getattr(self.model, "model", None), torch.nn.Module) and self.datamodule is not None:
            require_batch_fits(self.model.model.cfg, self.datamodule.batch_size)
            require_batch_fits(self.model.model.cfg, self.datamodule.val_batch_size, "data.val_batch_size")
            self.model.check_data(self.datamodule)
        self._choose_threads()
        trainer = {**self.config_init[self.subcommand].trainer, **kwargs}
        kwargs["callbacks"] = self._callbacks(trainer)
        if not trainer.get("plugins"):
            kwargs["plugins"] = [checkpoints.AtomicCheckpointIO()]
        try:
            created = super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ModuleNotFoundError) as error:  # a trainer value Lightning refuses
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(f"trainer: {first}") from None
        for callback in created.callbacks:
            if isinstance(callback, AnalysisSnapshots):
                callback.run_dir = self.run_dir
        if self.subcommand == "fit" and self.checkpoint is not None and created.is_global_zero:
            for logger in created.loggers:
                if isinstance(logger, CSVLogger):
                    logging_utils.continue_csv_metrics(logger, purge_step(self.checkpoint, self.config.fit.trainer))
        return created

    def _choose_threads(self) -> None:
        """The intra-op thread count of a CPU run (lit_interp.threads); GPU runs keep PyTorch's."""
        config = self.config[self.subcommand]
        requested = threads.parse_count(config.get("threads"), "--threads")
        on_gpu = torch.cuda.is_available() and config.trainer.accelerator not in ("cpu",)
        if on_gpu or getattr(self.model, "model", None) is None or self.datamodule is None:
            self.thread_choice = None
            return
        resumed = (self.checkpoint or {}).get("lit_interp", {}).get("threads")
        resumed = resumed if isinstance(resumed, int) and 1 <= resumed <= threads.MAX_THREADS else None
        devices = config.trainer.devices if isinstance(config.trainer.devices, int) else 1
        self.thread_choice = threads.choose_threads(requested, devices, resumed)
        threads.use_threads(self.thread_choice)

    def _callbacks(self, trainer: dict[str, Any]) -> list:
        """The config's callbacks, the guards before them (the analysis never sees a diverged step), and ours after."""
        callbacks = list(trainer.get("callbacks") or [])
        after = []
        if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            after.append(ThrottledProgressBar())  # Lightning's redraws every step
        if trainer.get("logger") and not any(isinstance(c, LearningRateMonitor) for c in callbacks):
            after.append(LearningRateMonitor(logging_interval="step"))
        if self.subcommand == "fit":
            after.append(RunSummary(self.run_dir, seed=self.config[self.subcommand].get("seed_everything")))
        return [FiniteLossGuard(), GracefulInterrupt(), *callbacks, *after]

    def _before_run(self) -> None:
        if self.checkpoint is not None and self.subcommand == "fit":
            checkpoints.check_same_world_size(self.checkpoint, self.config.fit.ckpt_path, self.trainer.world_size)
            if self.trainer.is_global_zero:
                self._record_resume()
        if self.subcommand == "fit" and self.trainer.is_global_zero:
            print(f"lit_interp: {self._what_trains()}", file=sys.stderr)
        startup_done()

    def _what_trains(self) -> str:
        """One line: the task, its size, precision and device, the run directory, and the steps ahead."""
        parameters = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        start = self.checkpoint["global_step"] if self.checkpoint is not None else 0
        device = self.trainer.strategy.root_device.type
        what = f"{type(self.model).__name__} ({parameters:,} parameters, {trainable:,} trained; "
        what += f"{self.trainer.precision} on {device} x{self.trainer.world_size}"
        what += f", {self.thread_choice})" if self.thread_choice is not None else ")"
        verb = "resuming" if start else "training"
        return f"{verb} {what} in {self.run_dir}, steps {start} to {self.trainer.max_steps}"

    def _record_resume(self) -> None:
        """What a resume is, said once and kept in the run: a branch, the changes, or a finished run."""
        step, max_steps = self.checkpoint["global_step"], self.trainer.max_steps
        if self.branched_from is not None:
            write_json(self.run_dir / BRANCHED_FROM_JSON, self.branched_from)
            print(
                f"lit_interp: {self.branched_from['run']} went on to step {self.branched_from['parent_reached_step']}; "
                f"continuing from step {step} in a new run, {self.run_dir}",
                file=sys.stderr,
            )
        record_resume(self.run_dir, step, self.resume_changes)
        if 0 < max_steps <= step:
            print(
                f"lit_interp: {self.run_dir} is finished (step {step}, max_steps={max_steps}); nothing to train: "
                "raise --trainer.max_steps to continue it",
                file=sys.stderr,
            )

    before_fit = before_validate = before_test = _before_run


class LightningNoise(logging.Filter):
    """Lightning's lines a researcher does not need: an advert, absent accelerators, what lit_interp says itself."""

    DROPPED = ("💡 Tip", "GPU available", "TPU available", "HPU available", "Received SIGTERM", "Bypassing", "Restor")

    @override
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.DROPPED)


NOISY_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.trainer.connectors.signal_connector")
NOISY_WARNINGS = (
    "LightningCLI's args parameter is intended",  # lit_interp passes its own argv on, not a second command line
    ".*treespec.*",  # a deprecation inside Lightning's own code
    "Checkpoint directory .* exists and is not empty",  # a resumed run writes into its own checkpoints/
    "Experiment logs directory .* exists and is not empty",  # continue_csv_metrics keeps the rows
    "Be aware that when using `ckpt_path`",  # validate/test read weights only; fit restores its own callbacks
    "The dirpath has changed from",  # a rewound resume branches into a new version directory on purpose
)


def quiet_lightning() -> None:
    # The seed is in the run's config.yaml; its log line would sit between a user's command and its one-line error.
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, LightningNoise) for existing in logger.filters):
            logger.addFilter(LightningNoise())
    for message in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def run_cli(args: list[str] | None = None) -> LitInterpCLI:
    """The command in-process (tests, notebooks): exceptions propagate; `main` turns user errors into one line."""
    quiet_lightning()
    return LitInterpCLI(args)


def main(argv: list[str]) -> None:
    """fit, validate or test: a user's mistake is one line and exit 2; Ctrl-C or SIGTERM leave a resumable run."""
    try:
        check_command_line(argv)
        run_cli(argv)
    except NonFiniteLossError as error:
        print(f"lit_interp: error: {error}", file=sys.stderr)
        sys.exit(1)
    except SIGTERMException:
        print(
            "lit_interp: interrupted; a resumable last.ckpt was written: continue with --ckpt_path last",
            file=sys.stderr,
        )
        sys.exit(128 + (INTERRUPTED_BY["signal"] or signal.SIGTERM))
    except Exception as error:
        message = user_error_message(error)
        if message is None:
            raise
        fail(message)


__all__ = ["LitInterpCLI", "USER_ERROR_EXIT", "main", "run_cli"]
