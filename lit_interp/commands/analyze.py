"""`python -m lit_interp analyze`: report on one checkpoint (--ckpt_path), one run's snapshots (--run) or many runs."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from lit_interp.commands.arguments import ArgumentParser, positive_int, user_errors
from lit_interp.errors import ConfigError

DESCRIPTION = """Analyze a checkpoint, or report how a run's analysis snapshots changed over training, or compare runs.

  --ckpt_path FILE  rebuild the model from FILE's hyperparameters (no config needed), analyze a
                    probe batch, write OUT/summary.json, OUT/tensors.safetensors, OUT/report.html;
                    OUT defaults to analysis_<checkpoint name>/ beside FILE
  --run DIR         read DIR/analysis/step_*.json (written by the AnalysisSnapshots callback during
                    fit), write OUT/trajectory.json and OUT/report.html; OUT defaults to DIR/analysis_report/
  --runs DIR...     a sweep directory or run directories: OUT/report.html and OUT/runs.csv across runs;
                    OUT defaults to DIR/runs_report/ for one DIR
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser("analyze", DESCRIPTION)
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
        type=positive_int("--probe_batch_size"),
        help="sequences in the probe batch (default: the run's snapshots' size, else 256)",
    )
    parser.add_argument(
        "--probe_index",
        type=int,
        default=0,
        help="which probe batch, >= 0; 0 is the one the training snapshots use",
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
    args = parser.parse_args(argv)
    if not 0 <= args.probe_index < 2**31:
        raise ConfigError(f"--probe_index={args.probe_index} must be between 0 and {2**31 - 1}")
    return args


def check_device(device: str) -> str:
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {device!r} is not a torch device; use cpu or cuda") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} but this machine has no CUDA device; use --device cpu")
    if parsed.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device}: lit_interp analyzes on cpu or cuda")
    return device


def output_dir(out: Path | None, default: Path, overwrite: bool) -> Path:
    """The directory to write into: absent, empty, or (with --overwrite) ours; never a symlink out of it."""
    out = out or default
    if out.is_symlink():
        raise ConfigError(f"--out {out} is a symbolic link; pass a real directory (lit_interp never follows one)")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} is not empty; pass another --out or add --overwrite")
    return out


def create_output_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"--out {out} cannot be created ({error.strerror or error}); pass a writable directory"
        ) from None
    if not out.is_dir() or out.is_symlink():
        raise ConfigError(f"--out {out} is not a directory lit_interp can write into")


def write_outputs(out: Path, texts: dict[str, str], tensors: dict | None = None) -> None:
    """Each file atomically (a planted symlink is replaced, never followed); everything was computed first."""
    from lit_interp.files import atomic_write

    create_output_dir(out)
    try:
        for name, text in texts.items():
            atomic_write(out / name, lambda path, text=text: path.write_text(text))
        if tensors is not None:
            from safetensors.torch import save_file

            atomic_write(out / "tensors.safetensors", lambda path: save_file(tensors, str(path)))
    except OSError as error:
        raise ConfigError(
            f"cannot write into --out {out} ({error.strerror or error}); pass a writable directory"
        ) from None


def analyze_checkpoint(args: argparse.Namespace) -> Path:
    from lit_interp import checkpoints
    from lit_interp.analysis.snapshot import DEFAULT_PROBE_BATCH_SIZE, run_analysis
    from lit_interp.files import json_text
    from lit_interp.memory import require_batch_fits
    from lit_interp.rebuild import config_classes, rebuild
    from lit_interp.report.checkpoint import checkpoint_report
    from lit_interp.snapshots import snapshot_probe_size
    from lit_interp.threads import choose_threads, use_threads

    path = args.ckpt_path
    out = output_dir(args.out, path.parent / f"analysis_{path.stem}", args.overwrite)
    trusted = config_classes(args.config)
    device = check_device(args.device)
    checkpoint = checkpoints.load_checkpoint(path)
    checkpoints.validate_schema(checkpoint, path)
    module, datamodule = rebuild(checkpoint, path, trusted)
    probe_batch_size = args.probe_batch_size or snapshot_probe_size(checkpoint) or DEFAULT_PROBE_BATCH_SIZE
    require_batch_fits(module.model.cfg, probe_batch_size, "--probe_batch_size")
    if device == "cpu":
        use_threads(choose_threads(None))
    module.to(device)
    step = checkpoint.get("global_step", 0)
    hooks = not (args.no_hook_mean_ablation or args.no_sweep_hooks)
    summary, tensors = run_analysis(
        module, datamodule, step, probe_batch_size, args.probe_index, hook_mean_ablation=hooks
    )
    summary["checkpoint"] = str(path)
    page = checkpoint_report(summary, tensors, f"lit_interp analysis of {path.name}")
    write_outputs(out, {"summary.json": json_text(summary), "report.html": page}, tensors)
    return out


def analyze_run(args: argparse.Namespace) -> Path:
    from lit_interp.files import json_text
    from lit_interp.report.run import run_report, trajectories
    from lit_interp.snapshots import analysis_dir, read_snapshots

    run = args.run
    if not run.is_dir():
        raise ConfigError(f"--run {run} is not a directory; pass a run directory such as lightning_logs/version_0")
    out = output_dir(args.out, run / "analysis_report", args.overwrite)
    snapshots = read_snapshots(run, on_damaged="raise")
    if not snapshots:
        raise ConfigError(
            f"--run {run} has no snapshots ({analysis_dir(run)}/step_*.json); train with the AnalysisSnapshots "
            "callback (every configs/*.yaml has it), or analyze a checkpoint with --ckpt_path"
        )
    page = run_report(snapshots, f"lit_interp run report of {run}")
    data = trajectories(snapshots.summaries)
    write_outputs(out, {"trajectory.json": json_text(data, indent=None), "report.html": page})
    return out


def parse_thresholds(items: list[str]) -> dict[str, float]:
    """The formation table's thresholds, with `SCORE=VALUE` items from --threshold replacing or adding to them."""
    from lit_interp.formation import threshold_values

    overrides: dict[str, float] = {}
    for item in items:
        score, equals, text = item.partition("=")
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not equals or not score.strip().isidentifier() or not math.isfinite(value):
            raise ConfigError(f"--threshold {item!r}: write SCORE=VALUE with a finite VALUE, e.g. prev_token_score=0.7")
        overrides[score.strip()] = value
    return threshold_values(overrides)


def analyze_runs(args: argparse.Namespace) -> Path:
    from lit_interp.report.runs import runs_report
    from lit_interp.report.runs_table import csv_text

    directories = args.runs
    if args.out is None and len(directories) > 1:
        raise ConfigError("--runs with several directories needs --out DIR for the report")
    thresholds = parse_thresholds(args.threshold)
    out = output_dir(args.out, directories[0] / "runs_report", args.overwrite)
    page, rows = runs_report(directories, thresholds)
    write_outputs(out, {"report.html": page, "runs.csv": csv_text(rows)})
    return out


def analyze(args: argparse.Namespace) -> Path:
    if args.runs:
        return analyze_runs(args)
    return analyze_checkpoint(args) if args.ckpt_path else analyze_run(args)


def main(argv: list[str]) -> Any:
    """A user's mistake exits 2 with one line, and nothing is written."""
    with user_errors():
        out = analyze(parse_args(argv))
    print(f"wrote {out}/report.html")
