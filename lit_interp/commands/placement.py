"""Where a run writes: its runs root, every logger placed in its run directory, what a resumed run's loggers keep."""

from __future__ import annotations

from pathlib import Path

BRANCHED_FROM_JSON = "branched_from.json"  # a run resumed from an earlier point of another: that run and step
# Loggers whose runs live in `<save_dir>/<name>/version_N`, the run directory lit_interp writes into.
VERSIONED_LOGGERS = ("TensorBoardLogger", "CSVLogger")


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


def checkpoint_progress(run_dir: Path, resumed: Path) -> int:
    """The furthest step the run checkpointed: its periodic checkpoints' steps, and its last.ckpt's when that is
    not the checkpoint being resumed. (Snapshots after the last checkpoint are no progress: a resumed run
    replays and re-logs them.)"""
    from lit_interp.checkpoints import checkpoint_step, load_checkpoint
    from lit_interp.errors import ConfigError

    steps = [checkpoint_step(path) for path in (run_dir / "checkpoints").glob("step_*.ckpt")]
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file() and last.resolve() != Path(resumed).resolve():
        try:
            step = load_checkpoint(last).get("global_step")
            steps += [step] if isinstance(step, int) else []
        except ConfigError:
            pass  # an unreadable last.ckpt records no progress
    return max(steps, default=0)
