"""`python -m lit_interp analyze`: report on one checkpoint (--ckpt_path) or on a run's snapshots (--run)."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path
from typing import Any

from lit_interp.errors import ConfigError

DESCRIPTION = """Analyse a checkpoint, or report how a run's analysis snapshots changed over training.

  --ckpt_path FILE  rebuild the model from FILE's hyperparameters (no config needed), analyze a
                    probe batch, write OUT/summary.json, OUT/tensors.safetensors, OUT/report.html;
                    OUT defaults to analysis_<checkpoint name>/ beside FILE
  --run DIR         read DIR/analysis/step_*.json (written by the AnalysisSnapshots callback during
                    fit), write OUT/trajectory.json and OUT/report.html; OUT defaults to DIR/analysis_report/
"""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other lit_interp error
        raise ConfigError(f"analyze: {message}; see python -m lit_interp analyze --help")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = Parser(
        prog="python -m lit_interp analyze",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt_path", type=Path, help="a .ckpt written by lit_interp fit")
    source.add_argument("--run", type=Path, help="a run directory, e.g. lightning_logs/version_0")
    source.add_argument("--runs", type=Path, nargs="+", help="a sweep directory or run directories: cross-run report")
    parser.add_argument(
        "--threshold", action="append", default=[], help="with --runs: SCORE=VALUE, e.g. prev_token_score=0.7"
    )
    parser.add_argument("--out", type=Path, help="output directory (must be empty or absent unless --overwrite)")
    parser.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty --out, replacing the report files"
    )
    parser.add_argument(
        "--probe_batch_size",
        type=int,
        help="sequences in the probe batch (default: the run's snapshots' size, else 256)",
    )
    parser.add_argument(
        "--probe_index", type=int, default=0, help="which probe batch; 0 is the one the training snapshots use"
    )
    parser.add_argument("--device", default="cpu", help="torch device to analyze on (default cpu)")
    parser.add_argument(
        "--config",
        type=Path,
        help="with --ckpt_path: the run's config.yaml, to analyze a task defined outside lit_interp",
    )
    parser.add_argument(
        "--no_hook_mean_ablation", action="store_true", help="skip the mean ablation of every hook, one at a time"
    )
    parser.add_argument("--no_sweep_hooks", action="store_true", help=argparse.SUPPRESS)  # its deprecated name
    return parser.parse_args(argv)


def import_class(name: str, base: type, what: str, path: Path, trusted: tuple[str, ...] = ()) -> type:
    """The class a checkpoint names, imported only from a trusted module (lit_interp, a package registered under
    the `lit_interp.tasks` entry point, or a class named in the `--config` the user passed): a checkpoint never
    makes lit_interp import arbitrary code."""
    from lit_interp.checkpoints import is_trusted_class

    if not re.fullmatch(r"\w+(\.\w+)+", name or "") or not is_trusted_class(name, trusted):
        raise ConfigError(
            f"checkpoint {path} names {what} class {name!r}, which is neither lit_interp's nor registered; pass "
            "the run's config "
            "with --config (e.g. lightning_logs/version_0/config.yaml) or register the package under the "
            "lit_interp.tasks entry point"
        )
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


def snapshot_probe_size(checkpoint: dict[str, Any]) -> int | None:
    """The probe batch size of the run's AnalysisSnapshots, so analyze reproduces its snapshots by default."""
    for name, state in (checkpoint.get("callbacks") or {}).items():
        size = (
            state.get("probe_batch_size")
            if isinstance(state, dict) and str(name).startswith("AnalysisSnapshots")
            else None
        )
        if isinstance(size, int) and size >= 1:
            return size
    return None


def check_device(device: str) -> str:
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {device!r} is not a torch device; use cpu or cuda") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} but this machine has no CUDA device; use --device cpu")
    return device


def config_classes(config: Path | None) -> tuple[str, ...]:
    """The model and data class paths a user's config names: classes the user chose to trust."""
    if config is None:
        return ()
    import yaml

    try:
        values = yaml.safe_load(config.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(
            f"--config {config} cannot be read as YAML ({type(error).__name__}); pass the run's config.yaml"
        ) from None
    names = [
        values.get(key, {}).get("class_path") if isinstance(values.get(key), dict) else None
        for key in ("model", "data")
    ]
    return tuple(name for name in names if isinstance(name, str))


def init_args(hyper_parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value for key, value in hyper_parameters.items() if not key.startswith("_")
    }  # drop _class_path, _instantiator


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


def output_dir(out: Path | None, default: Path, overwrite: bool) -> Path:
    out = out or default
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} is not empty; pass another --out or add --overwrite")
    return out


def analyze_checkpoint(args: argparse.Namespace) -> Path:
    from safetensors.torch import save_file

    from lit_interp import checkpoints
    from lit_interp.analysis.snapshot import run_analysis
    from lit_interp.report import checkpoint_report

    if args.probe_batch_size is not None and args.probe_batch_size < 1:
        raise ConfigError(f"--probe_batch_size={args.probe_batch_size} must be >= 1")
    path = args.ckpt_path
    out = output_dir(args.out, path.parent / f"analysis_{path.stem}", args.overwrite)
    checkpoint = checkpoints.load_checkpoint(path)
    checkpoints.validate_schema(checkpoint, path)
    module, datamodule = rebuild(checkpoint, path, config_classes(args.config))
    module.to(check_device(args.device))
    step = int(checkpoint.get("global_step", 0))
    probe_batch_size = args.probe_batch_size or snapshot_probe_size(checkpoint) or 256
    summary, tensors = run_analysis(
        module,
        datamodule,
        step,
        probe_batch_size,
        args.probe_index,
        hook_mean_ablation=not (args.no_hook_mean_ablation or args.no_sweep_hooks),
    )
    summary["checkpoint"] = str(path)
    page = checkpoint_report(summary, tensors, f"lit_interp analysis of {path.name}")
    out.mkdir(parents=True, exist_ok=True)  # everything is computed before anything is written
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    save_file(tensors, str(out / "tensors.safetensors"))
    (out / "report.html").write_text(page)
    return out


def nan_to_null(value: Any) -> Any:
    """A missing value (NaN in a series) as JSON null, so trajectory.json is strict JSON."""
    if isinstance(value, dict):
        return {key: nan_to_null(item) for key, item in value.items()}
    if isinstance(value, list):
        return [nan_to_null(item) for item in value]
    return None if isinstance(value, float) and value != value else value


def analyze_run(args: argparse.Namespace) -> Path:
    from lit_interp.report import read_snapshots, run_report, trajectories

    snapshots = read_snapshots(args.run)
    out = output_dir(args.out, args.run / "analysis_report", args.overwrite)
    page = run_report(args.run, snapshots, f"lit_interp run report of {args.run}")
    data = trajectories([snapshot.summary for snapshot in snapshots])
    out.mkdir(parents=True, exist_ok=True)
    (out / "trajectory.json").write_text(json.dumps(nan_to_null(data)))
    (out / "report.html").write_text(page)
    return out


def main(argv: list[str]) -> None:
    """Entry point from `lit_interp.cli.main`; a user's mistake exits 2 with one line, nothing written."""
    try:
        args = parse_args(argv)
        if args.runs:
            from lit_interp.report.runs import analyze_runs

            out = analyze_runs(args.runs, args.out, args.overwrite, args.threshold)
        else:
            out = analyze_checkpoint(args) if args.ckpt_path else analyze_run(args)
    except ConfigError as error:
        print(f"lit_interp: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {out}/report.html")
