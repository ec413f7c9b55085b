"""Cross-run report (`analyze --runs`): runs found under directories, their scalars, snapshots, phase changes, CSV."""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import yaml

from lit_interp import runlogs
from lit_interp.errors import ConfigError
from lit_interp.report.figures import layout, step_lines
from lit_interp.report.html import Figure, Section, embed, plain, render, table

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
CURVES = ("val/loss", "val/acc", "val/r2", "train/loss")
NOT_PARAMETERS = (
    "trainer.logger",
    "trainer.default_root_dir",
    "ckpt_path",
    "trainer.callbacks",
    "trainer.enable_progress_bar",
    "checkpoint.dirpath",
)
TABLE_METRICS = ("val/", "train/loss")  # the final metrics the page's table shows; runs.csv has every scalar


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
    """The run's path below the directories' common parent (below a lone run's parent), without `lightning_logs/`."""
    resolved = [directory.resolve() for directory in directories]
    base = Path(os.path.commonpath(resolved))
    if base == run.resolve():
        base = base.parent
    return str(run.resolve().relative_to(base)).replace("lightning_logs/", "")


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
        series = runlogs.read_scalars(path)
        # `final/*` repeats the last values for TensorBoard's hparams tab.
        final = {
            tag: values[-1]
            for tag, (_, values) in series.items()
            if values and tag != "epoch" and not tag.startswith("final/")
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


def parse_thresholds(items: list[str]) -> dict[str, float]:
    """The default thresholds, with `SCORE=VALUE` items from --threshold replacing or adding to them."""
    thresholds = dict(DEFAULT_THRESHOLDS)
    for item in items:
        score, _, value = item.partition("=")
        try:
            thresholds[score.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--threshold {item!r}: write SCORE=VALUE, e.g. prev_token_score=0.7") from None
    return thresholds


def score_box(runs: list[Run], score: str) -> go.Figure | None:
    """One box per head of `score` at each run's last snapshot, every run a point (hover: its label)."""
    figure = go.Figure()
    heads = list(
        dict.fromkeys(head for run in runs for head, scores in run.last.get("heads", {}).items() if score in scores)
    )
    for head in heads:
        points = [
            (run.label, run.last["heads"][head][score])
            for run in runs
            if score in run.last.get("heads", {}).get(head, {})
        ]
        figure.add_trace(
            go.Box(
                y=[value for _, value in points],
                name=plain(head),
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                text=[plain(name) for name, _ in points],
                hovertemplate="%{text}<br>%{y:.4g}<extra></extra>",
            )
        )
    if not heads:
        return None
    layout(figure, title=plain(score), height=340, width=max(320, 120 + 60 * len(heads)))
    figure.update_layout(showlegend=False)
    return figure


def crossing_strip(runs: list[Run], score: str, threshold: float) -> go.Figure | None:
    """Each run's phase-change step per head (a point per run); runs that never reach the threshold are counted."""
    figure = go.Figure()
    for head in list(dict.fromkeys(key.split("/")[0] for run in runs for key in crossings(run, {score: threshold}))):
        steps = [
            (run.label, crossings(run, {score: threshold}).get(f"{head}/{score}")) for run in runs if run.snapshots
        ]
        reached = [(name, step) for name, step in steps if step is not None]
        if not reached:
            continue
        figure.add_trace(
            go.Box(
                y=[step for _, step in reached],
                name=f"{plain(head)} ({len(reached)}/{len(steps)})",
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                text=[plain(name) for name, _ in reached],
                hovertemplate="%{text}<br>step %{y}<extra></extra>",
            )
        )
    if not figure.data:
        return None
    layout(
        figure,
        title=f"{plain(score)} ≥ {threshold:g}",
        height=340,
        width=max(360, 140 + 90 * len(figure.data)),
    )
    figure.update_layout(showlegend=False, yaxis_title="first snapshot step at or above")
    return figure


def optuna_section(directories: list[Path]) -> Section | None:
    """Optuna's own plots of a search (importances need nothing beyond Optuna: its default PED-ANOVA evaluator)."""
    import optuna

    from lit_interp.sweep import open_storage

    for directory in directories:
        info_path = directory / "sweep.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        if not info.get("space"):
            continue
        study = optuna.load_study(study_name=info["study_name"], storage=open_storage(info["storage"]))
        complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
        if len(complete) < 2:
            return Section("Search", [], note=f"{len(complete)} complete trial(s): Optuna's plots need at least 2.")
        items, notes = [], []
        plots = [
            ("parameter importances", optuna.visualization.plot_param_importances),
            ("slice", optuna.visualization.plot_slice),
            ("parallel coordinates", optuna.visualization.plot_parallel_coordinate),
        ]
        for name, plot in plots:
            try:
                items.append(embed(plot(study)))
            except (ValueError, RuntimeError, ZeroDivisionError) as error:
                notes.append(f"{name}: not drawn ({error})")
        objective = f"objective {info['objective']} ({info['direction']})"
        note = f"Study {info['study_name']}, {objective}, {len(complete)} complete trials. " + " ".join(notes)
        return Section("Search (Optuna)", items, note=note)
    return None


FINDINGS_NOTE = "A head has a finding when its score at the run's last snapshot reaches the threshold (--threshold)."
FORMS_NOTE = (
    "The first snapshot step at which each head's score reaches the threshold, one point per run; the count is of "
    "runs that reached it. A run whose first snapshot is already above the threshold formed it at or before that step."
)
RUNS_NOTE = "Parameters: the config values that differ between runs. runs.csv beside this page adds every head score."


def last_scores(runs: list[Run]) -> list[str]:
    """Every numeric head score of the runs' last snapshots, in first-seen order."""
    heads = [scores for run in runs for scores in run.last.get("heads", {}).values()]
    return list(dict.fromkeys(name for scores in heads for name, value in scores.items() if isinstance(value, float)))


def training_curves(runs: list[Run]) -> list[Figure]:
    curves = {tag: {run.label: run.series[tag] for run in runs if tag in run.series} for tag in CURVES}
    return [
        embed(step_lines(lines, tag, tag, log_y=tag.endswith("loss")), "step-axis")
        for tag, lines in curves.items()
        if lines
    ]


def sections(
    runs: list[Run], parameters: list[str], thresholds: dict[str, float], directories: list[Path]
) -> list[Section]:
    found = {row["finding"]: {"runs": row["runs"], "of": row["of"]} for row in findings(runs, thresholds)}
    formed = [crossing_strip(runs, score, threshold) for score, threshold in thresholds.items()]
    boxes = [score_box(runs, score) for score in last_scores(runs)]
    rows = {
        row.pop("run"): {key: value for key, value in row.items() if "/" not in key or key.startswith(TABLE_METRICS)}
        for row in csv_rows(runs, parameters, {})
    }
    search = optuna_section(directories)
    candidates = [
        Section("Findings across runs", [table(found, "finding")] if found else [], note=FINDINGS_NOTE),
        Section("When each circuit forms", [embed(figure) for figure in formed if figure], note=FORMS_NOTE),
        Section("Head scores at the last snapshot", [embed(figure) for figure in boxes if figure]),
        Section("Training curves", training_curves(runs)),
        Section("Runs", [table(rows, "run")], note=RUNS_NOTE),
    ]
    return ([search] if search else []) + [section for section in candidates if section.items]


def runs_report(directories: list[Path], thresholds: dict[str, float]) -> tuple[str, list[dict[str, Any]]]:
    """(the HTML page, the CSV rows) for every run under the directories."""
    runs, parameters = collect(directories)
    facts = [
        ("runs", len(runs)),
        ("with snapshots", sum(bool(run.snapshots) for run in runs)),
        ("parameters", ", ".join(parameters) or "none differ"),
        ("directories", ", ".join(map(str, directories))),
    ]
    title = f"lit_interp: {len(runs)} runs of {', '.join(d.name for d in directories)}"
    page = render(
        "report.html.j2",
        title=title,
        facts=facts,
        sections=sections(runs, parameters, thresholds, directories),
        step_axis_toggle=True,
        log_steps=False,  # the curves are validations at a fixed interval
    )
    return page, csv_rows(runs, parameters, thresholds)


def analyze_runs(directories: list[Path], out: Path | None, overwrite: bool, threshold_items: list[str]) -> Path:
    """`analyze --runs`: write OUT/report.html and OUT/runs.csv; OUT defaults to DIR/runs_report/ for one DIR."""
    from lit_interp.analyze import output_dir

    if out is None and len(directories) > 1:
        raise ConfigError("--runs with several directories needs --out DIR for the report")
    thresholds = parse_thresholds(threshold_items)
    out = output_dir(out, directories[0] / "runs_report", overwrite)
    page, rows = runs_report(directories, thresholds)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.html").write_text(page)
    write_csv(rows, out / "runs.csv")
    return out
