"""Many runs as rows: found under directories, with their varying config, final scalars, snapshots, formation
steps and findings (the data of `analyze --runs` and of runs.csv)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lit_interp import runlogs
from lit_interp.errors import ConfigError
from lit_interp.formation import PHASE_CHANGES, PHASES, Formation, finding, formation, phase_steps, summary_value
from lit_interp.optuna_storage import SQLITE, load_existing_study, local_file
from lit_interp.snapshots import RunSnapshots, Snapshot, read_snapshots
from lit_interp.sweep_dir import DIRECTORY_ID, home_number, ran_in, read_sweep_info, trial_dir, trial_run_dir

if TYPE_CHECKING:
    from lit_interp.analysis.phase_change import Fall

# Keys that differ between runs without being a parameter of the run.
NOT_PARAMETERS = (
    "trainer.logger",
    "trainer.default_root_dir",
    "ckpt_path",
    "trainer.callbacks",
    "trainer.enable_progress_bar",
    "checkpoint.dirpath",
)
TABLE_METRICS = ("val/", "train/loss")  # the final metrics the page's table shows; runs.csv has every scalar
CURVES = ("val/loss", "val/acc", "val/r2", "train/loss")  # the series kept per run, for the page's training curves
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, where PyYAML has it: hundreds of configs
KEPT_SECTIONS = ("step", "task", "loss", "heads")  # what the cross-run report reads of a snapshot
KEY_FREQUENCIES = "fourier.key_frequencies"  # and of these sections, only these entries
KEPT_ENTRIES = (*(phase.key for phase in (*PHASES.values(), *PHASE_CHANGES.values())), KEY_FREQUENCIES)


@dataclass
class RunRecord:
    """One run's numbers: its varying config values, last logged scalars, snapshots and formation steps."""

    label: str
    path: Path
    config: dict[str, Any]
    final: dict[str, float]
    series: dict[str, tuple[list[int], list[float]]]  # tag -> (steps, values), from lit_interp.runlogs
    snapshots: RunSnapshots
    sweep: dict[str, Any] = field(default_factory=dict)  # trial number, state, objective value, error

    @property
    def last(self) -> dict[str, Any]:
        return self.snapshots.summaries[-1] if self.snapshots else {}


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


def formation_of(run: RunRecord, head: str, score: str, threshold: float) -> Formation | None:
    """When `head`'s `score` first reached `threshold` in the run's snapshots (lit_interp.formation's rule)."""
    values = [summary.get("heads", {}).get(head, {}).get(score) for summary in run.snapshots.summaries]
    return formation(
        run.snapshots.steps, [value if isinstance(value, (int, float)) else None for value in values], threshold
    )


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(config, dict):
        return {key: value for name, item in config.items() for key, value in flatten(item, f"{prefix}{name}.").items()}
    return {prefix.rstrip("."): config}


def read_config(run: Path) -> dict[str, Any]:
    path = run / "config.yaml"
    try:
        return flatten(yaml.load(path.read_text(), Loader=SAFE_LOADER) or {}) if path.is_file() else {}
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
    """The run's path below the directories' common parent (below a lone run's parent), without `lightning_logs/`."""
    resolved = [directory.resolve() for directory in directories]
    base = Path(os.path.commonpath(resolved))
    if base == run.resolve():
        base = base.parent
    return str(run.resolve().relative_to(base)).replace("lightning_logs/", "")


def study_storage(directory: Path, info: dict[str, Any]) -> str:
    """The storage URL of a sweep's study; a default SQLite file moved with its sweep directory is read where it is."""
    url = info["storage"]
    path = local_file(url)
    beside = Path(directory) / "optuna.db"
    if (
        url.startswith(SQLITE)
        and path is not None
        and path.name == "optuna.db"
        and not path.exists()
        and beside.is_file()
    ):
        return f"{SQLITE}{beside.resolve()}"
    return url


def lost_worker(trial: Any, retries: dict[int, Any], directory_id: str | None) -> str | None:
    """Why a FAIL trial has no result when its worker died and another trial took it over (None otherwise)."""
    retry = retries.get(trial.number)
    if retry is None:
        return None
    where = "" if ran_in(retry, directory_id) else " in another sweep directory"
    return f"its worker stopped sending heartbeats; trial {retry.number} took it over{where}"


def sweep_study(directory: Path):
    """The study of a directory written by `sweep` (opened once per process: the page and the table both read it)."""
    return open_sweep_study(Path(directory).resolve(), str(directory))


@cache
def open_sweep_study(resolved: Path, shown: str):
    info = read_sweep_info(resolved)
    return load_existing_study(study_storage(resolved, info), info["study_name"], f"--runs {shown}")


def sweep_trials(directory: Path) -> dict[Path, dict[str, Any]]:
    """Run directory -> its trial (number, state, value, params, error), for a directory written by `sweep`.

    A trial directory holds the last attempt this sweep directory's workers made at its trial: the trial itself,
    or the retry that took it over when its worker died (Optuna numbers a retry anew).
    """
    info = read_sweep_info(directory)
    if info is None:
        return {}
    study = sweep_study(Path(directory))
    directory_id = info.get(DIRECTORY_ID)
    trials = study.get_trials(deepcopy=False)
    retries = {t.system_attrs["retry_history"][-1]: t for t in trials if t.system_attrs.get("retry_history")}
    latest = {home_number(t): t for t in trials if ran_in(t, directory_id)}  # in number order: the last one wins
    runs = {}
    for home, trial in latest.items():
        record = {"trial": home, "state": trial.state.name, "value": trial.value, **trial.user_attrs}
        record |= {"params": trial.params, "optuna_trial": trial.number}
        if (why := lost_worker(trial, retries, directory_id)) and "error" not in record:
            record["error"] = why
        runs[trial_run_dir(trial_dir(directory, home))] = record
    return runs


def trimmed(snapshots: RunSnapshots) -> RunSnapshots:
    """The snapshots with only what the cross-run report reads: memory grows with runs x heads, not x every section."""
    kept = []
    for snapshot in snapshots:
        summary = {key: snapshot.summary[key] for key in KEPT_SECTIONS if key in snapshot.summary}
        for key in KEPT_ENTRIES:
            section, entry = key.split(".", 1)
            values = snapshot.summary.get(section)
            if isinstance(values, dict) and entry in values:
                summary.setdefault(section, {})[entry] = values[entry]
        kept.append(Snapshot(snapshot.path, summary))
    return RunSnapshots(snapshots.run_dir, kept, snapshots.damaged)


def collect(directories: list[Path]) -> tuple[list[RunRecord], list[str]]:
    """(runs, parameter keys) for every run under the directories, sweep trials annotated with their state."""
    paths = find_runs(directories)
    trials = {path.resolve(): trial for directory in directories for path, trial in sweep_trials(directory).items()}
    configs = [read_config(path) for path in paths]
    runs = []
    for path, config in zip(paths, configs):
        series = runlogs.read_scalars(path)
        # `final/*` repeats the last values for TensorBoard's hparams tab.
        final = {
            tag: values[-1]
            for tag, (_, values) in series.items()
            if values and tag != "epoch" and not tag.startswith("final/")
        }
        snapshots = trimmed(read_snapshots(path, on_damaged="skip"))  # damaged ones listed in the report and runs.csv
        curves = {tag: series[tag] for tag in CURVES if tag in series}
        record = RunRecord(
            label(path, directories), path, config, final, curves, snapshots, trials.get(path.resolve(), {})
        )
        runs.append(record)
    return runs, varying(configs)


def head_scores(run: RunRecord, thresholds: dict[str, float]) -> dict[str, float]:
    """`<head>/<score>` -> the score at the run's last snapshot, for each thresholded score."""
    heads = run.last.get("heads", {})
    return {
        f"{head}/{score}": value
        for head, scores in heads.items()
        for score, value in scores.items()
        if score in thresholds and isinstance(value, (int, float))
    }


def formations(run: RunRecord, thresholds: dict[str, float]) -> dict[str, Formation | None]:
    """`<head>/<score>` -> when the score first reached its threshold (None: never within the run)."""
    pairs = dict.fromkeys(
        (head, score)
        for summary in run.snapshots.summaries
        for head, scores in summary.get("heads", {}).items()
        for score in scores
        if score in thresholds
    )
    return {f"{head}/{score}": formation_of(run, head, score, thresholds[score]) for head, score in pairs}


def phases(run: RunRecord) -> dict[str, Formation | None]:
    """Each run-level phase the run's snapshots measure -> when it was reached (None: not within the run)."""
    return phase_steps(run.snapshots.steps, run.snapshots.summaries)


def phase_changes(steps: list[int], summaries: list[dict[str, Any]]) -> dict[str, Fall]:
    """Each phase change (lit_interp.formation.PHASE_CHANGES) whose series any snapshot holds -> where the series
    falls (NaN fields with a reason when it does not fall far enough)."""
    found = {}
    for name, change in PHASE_CHANGES.items():
        values = [summary_value(summary, change.key) for summary in summaries]
        if any(value is not None for value in values):
            # Imported only for a run with the series: lit_interp.analysis imports torch, which other runs never need.
            from lit_interp.analysis.phase_change import phase_change

            series = [math.nan if value is None else value for value in values]
            found[name] = phase_change(steps, series, change.min_fall)
    return found


def describe_fall(fall: Fall) -> str:
    """A table cell: the step halfway down and the 20-80 % span of the fall, or why there is none."""
    if math.isnan(fall.step):
        return f"none ({fall.reason})"
    return f"{fall.step:.0f} (falls from {fall.start:.0f} to {fall.end:.0f})"


def key_frequencies(run: RunRecord) -> list[int] | None:
    """The key frequencies at the run's last snapshot (modular addition), None for a run without them."""
    section, entry = KEY_FREQUENCIES.split(".")
    keys = run.last.get(section, {}).get(entry)
    return list(keys) if isinstance(keys, list) else None


def phase_columns(run: RunRecord) -> dict[str, Any]:
    """runs.csv's columns of the run's phases: `<phase>_reached`, `<phase>_at` (the step, empty when never reached)
    and `<phase>_at_first_snapshot`; for each phase change `<name>_at` (interpolated, empty when the series does not
    fall far enough), `_start`, `_end` and `_relative_width`; `key_frequencies` as space-separated integers."""
    row: dict[str, Any] = {}
    for phase_name, formed in phases(run).items():
        row[f"{phase_name}_reached"] = formed is not None  # False: measured, never reached; absent: not measured
        row[f"{phase_name}_at"] = None if formed is None else formed.step
        row[f"{phase_name}_at_first_snapshot"] = None if formed is None else formed.at_first_snapshot
    for name, fall in phase_changes(run.snapshots.steps, run.snapshots.summaries).items():
        row |= {f"{name}_at": fall.step, f"{name}_start": fall.start, f"{name}_end": fall.end}
        row[f"{name}_relative_width"] = fall.relative_width
    keys = key_frequencies(run)
    if keys is not None:
        row["key_frequencies"] = " ".join(map(str, keys)) or "none"
    return row


def findings(runs: list[RunRecord], thresholds: dict[str, float]) -> list[dict[str, Any]]:
    """For each head and thresholded score: in how many runs (with snapshots) the last snapshot reaches it."""
    with_snapshots = [run for run in runs if run.snapshots]
    counts: dict[str, int] = {}
    for run in with_snapshots:
        for key, value in head_scores(run, thresholds).items():
            counts[key] = counts.get(key, 0) + (value >= thresholds[key.split("/")[1]])
    rows = []
    for key, count in counts.items():
        head, score = key.split("/")
        text = f"{head} is {finding(score, thresholds[score])} in {count}/{len(with_snapshots)} runs"
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


def csv_rows(runs: list[RunRecord], parameters: list[str], thresholds: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run": run.label}
        if run.sweep:
            row |= {
                "trial": run.sweep.get("trial"),
                "state": run.sweep.get("state"),
                "objective": run.sweep.get("value"),
                "error": run.sweep.get("error"),
                "takeover": run.sweep.get("takeover"),
            }
        row |= {key: run.config.get(key) for key in parameters}
        row |= {tag: value for tag, value in sorted(run.final.items())}
        row["last_snapshot_step"] = run.last.get("step")
        row["damaged_snapshots"] = "; ".join(map(str, run.snapshots.damaged)) or None
        row |= phase_columns(run)
        row |= head_scores(run, thresholds)
        for key, formed in formations(run, thresholds).items():
            row[f"{key}/formed_at"] = None if formed is None else formed.step
            row[f"{key}/formed_at_first_snapshot"] = None if formed is None else formed.at_first_snapshot
        rows.append(row)
    return rows


def csv_text(rows: list[dict[str, Any]]) -> str:
    """runs.csv: one row per run, a column for every key any row has; None and NaN as empty cells."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, columns)
    writer.writeheader()
    writer.writerows(
        {
            key: "" if value is None or (isinstance(value, float) and math.isnan(value)) else value
            for key, value in row.items()
        }
        for row in rows
    )
    return buffer.getvalue()
