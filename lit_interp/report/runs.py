"""Cross-run report (`analyze --runs`): runs found under directories, their scalars, snapshots, phase changes, CSV."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lit_interp import runlogs
from lit_interp.errors import ConfigError

# A head "has" a score's finding when its score reaches the threshold; the first snapshot where it does
# is its phase change.
DEFAULT_THRESHOLDS = {
    "prev_token_score": 0.5,
    "induction_score": 0.5,
    "bos_score": 0.5,
    "duplicate_score": 0.5,
    "ov_copying_score": 0.9,
}
FINDINGS = {
    "prev_token_score": "a previous-token head",
    "induction_score": "an induction head",
    "bos_score": "a BOS head",
    "duplicate_score": "a duplicate-token head",
    "ov_copying_score": "a copying OV circuit",
}
# Keys that differ between runs without being a parameter of the run.
NOT_PARAMETERS = (
    "trainer.logger",
    "trainer.default_root_dir",
    "ckpt_path",
    "trainer.callbacks",
    "trainer.enable_progress_bar",
)


@dataclass
class Run:
    """One run's numbers: its varying config values, last logged scalars, last snapshot and crossing steps."""

    label: str
    path: Path
    config: dict[str, Any]
    final: dict[str, float]
    series: dict[str, tuple[list[int], list[float]]]  # tag -> (steps, values), from lit_interp.runlogs
    snapshots: list[dict[str, Any]]
    sweep: dict[str, Any] = field(default_factory=dict)  # trial number, state, objective value, error

    @property
    def last(self) -> dict[str, Any]:
        return self.snapshots[-1] if self.snapshots else {}


def is_run(path: Path) -> bool:
    return any(path.glob("events.out.tfevents.*")) or any(path.glob("analysis/step_*.json"))


def find_runs(directories: list[Path]) -> list[Path]:
    """Every run directory (TensorBoard events or analysis snapshots) at or below the given directories."""
    runs: list[Path] = []
    for directory in directories:
        if not directory.is_dir():
            raise ConfigError(f"--runs {directory} is not a directory; pass a sweep directory or run directories")
        found = (
            [directory]
            if is_run(directory)
            else sorted(
                {p.parent for p in directory.rglob("events.out.tfevents.*")}
                | {p.parents[1] for p in directory.rglob("analysis/step_*.json")}
            )
        )
        if not found:
            raise ConfigError(
                f"--runs {directory} holds no runs (no TensorBoard events, no analysis/step_*.json); "
                "pass a sweep or run directory"
            )
        runs += [run for run in found if run not in runs]
    return runs


def read_snapshots(run: Path) -> list[dict[str, Any]]:
    """The run's analysis summaries by step; an unreadable file (a write cut off by a kill) is left out."""
    summaries = []
    for file in sorted((run / "analysis").glob("step_*.json")):
        try:
            summaries.append(json.loads(file.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
    return sorted(summaries, key=lambda summary: summary["step"])


def crossing_step(summaries: list[dict[str, Any]], head: str, score: str, threshold: float) -> int | None:
    """The first snapshot step at which `head`'s `score` is >= threshold, or None if it never is."""
    for summary in summaries:
        value = summary.get("heads", {}).get(head, {}).get(score)
        if isinstance(value, (int, float)) and value >= threshold:
            return int(summary["step"])
    return None


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(config, dict):
        return {key: value for name, item in config.items() for key, value in flatten(item, f"{prefix}{name}.").items()}
    return {prefix.rstrip("."): config}


def read_config(run: Path) -> dict[str, Any]:
    path = run / "config.yaml"
    try:
        return flatten(yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    except yaml.YAMLError:
        return {}


def varying(configs: list[dict[str, Any]]) -> list[str]:
    """Config keys whose values differ across runs: the runs' parameters."""
    keys = dict.fromkeys(key for config in configs for key in config)
    return [
        key
        for key in keys
        if not key.startswith(NOT_PARAMETERS) and len({json.dumps(c.get(key), sort_keys=True) for c in configs}) > 1
    ]


def label(run: Path, directories: list[Path]) -> str:
    """The run's path below the directory it was found in, without `lightning_logs/`."""
    for directory in directories:
        if run == directory:
            return run.name
        if directory in run.parents:
            return str(run.relative_to(directory)).replace("lightning_logs/", "")
    return str(run)


def sweep_trials(directory: Path) -> dict[Path, dict[str, Any]]:
    """Run directory -> its trial (number, state, value, params, error), for a directory written by `sweep`."""
    info_path = directory / "sweep.json"
    if not info_path.is_file():
        return {}
    import optuna

    from lit_interp.sweep import open_storage, run_dir

    info = json.loads(info_path.read_text())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=info["study_name"], storage=open_storage(info["storage"]))
    except (KeyError, ValueError, OSError) as error:
        raise ConfigError(
            f"--runs {directory}: cannot open its study {info['study_name']} in {info['storage']} ({error}); "
            "is the storage reachable?"
        ) from None
    trials = {}
    for trial in study.get_trials(deepcopy=False):
        run = run_dir(directory / trial_dir_name(trial.number))
        trials[run] = {
            "trial": trial.number,
            "state": trial.state.name,
            "value": trial.value,
            **trial.user_attrs,
            "params": trial.params,
        }
    return trials


def trial_dir_name(number: int) -> str:
    return f"trial_{number:04d}"


def collect(directories: list[Path]) -> tuple[list[Run], list[str]]:
    """(runs, parameter keys) for every run under the directories, sweep trials annotated with their state."""
    paths = find_runs(directories)
    trials = {path.resolve(): trial for directory in directories for path, trial in sweep_trials(directory).items()}
    configs = [read_config(path) for path in paths]
    runs = []
    for path, config in zip(paths, configs):
        series = read_scalars(path)
        final = {
            tag: values[-1][1] for tag, values in series.items() if not tag.startswith("analysis/") and tag != "epoch"
        }
        runs.append(
            Run(
                label(path, directories),
                path,
                config,
                final,
                series,
                read_snapshots(path),
                trials.get(path.resolve(), {}),
            )
        )
    return runs, varying(configs)


def head_scores(run: Run, thresholds: dict[str, float]) -> dict[str, float]:
    """`<head>/<score>` -> the score at the run's last snapshot, for each thresholded score."""
    heads = run.last.get("heads", {})
    return {
        f"{head}/{score}": value
        for head, scores in heads.items()
        for score, value in scores.items()
        if score in thresholds and isinstance(value, (int, float))
    }


def crossings(run: Run, thresholds: dict[str, float]) -> dict[str, int | None]:
    """`<head>/<score>` -> the first snapshot step at or above the threshold (None: never within the run)."""
    heads = run.last.get("heads", {})
    return {
        f"{head}/{score}": crossing_step(run.snapshots, head, score, thresholds[score])
        for head, scores in heads.items()
        for score in scores
        if score in thresholds
    }


def findings(runs: list[Run], thresholds: dict[str, float]) -> list[dict[str, Any]]:
    """For each head and thresholded score: in how many runs (with snapshots) the last snapshot reaches it."""
    with_snapshots = [run for run in runs if run.snapshots]
    counts: dict[str, int] = {}
    for run in with_snapshots:
        for key, value in head_scores(run, thresholds).items():
            counts[key] = counts.get(key, 0) + (value >= thresholds[key.split("/")[1]])
    rows = []
    for key, count in counts.items():
        head, score = key.split("/")
        what = FINDINGS.get(score, f"{score} >= threshold")
        text = f"{head} is {what} ({score} >= {thresholds[score]:g}) in {count}/{len(with_snapshots)} runs"
        rows.append(
            {
                "head": head,
                "score": score,
                "threshold": thresholds[score],
                "runs": count,
                "of": len(with_snapshots),
                "finding": text,
            }
        )
    return sorted(rows, key=lambda row: (-row["runs"] / max(row["of"], 1), row["head"], row["score"]))


def csv_rows(runs: list[Run], parameters: list[str], thresholds: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run": run.label}
        if run.sweep:
            row |= {
                "trial": run.sweep.get("trial"),
                "state": run.sweep.get("state"),
                "objective": run.sweep.get("value"),
                "error": run.sweep.get("error"),
            }
        row |= {key: run.config.get(key) for key in parameters}
        row |= {tag: value for tag, value in sorted(run.final.items())}
        row["last_snapshot_step"] = run.last.get("step")
        row |= head_scores(run, thresholds)
        row |= {f"{key}/crossed_at": step for key, step in crossings(run, thresholds).items()}
        rows.append(row)
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        writer.writerows(
            {
                key: "" if value is None or (isinstance(value, float) and math.isnan(value)) else value
                for key, value in row.items()
            }
            for row in rows
        )
