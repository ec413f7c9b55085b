"""The cross-run report (`analyze --runs`): findings and formation steps across runs, score distributions, curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from lit_interp.optuna_storage import load_existing_study
from lit_interp.report.figures import layout, step_lines
from lit_interp.report.html import Figure, Section, embed, plain, render, table
from lit_interp.report.runs_table import RunRecord, collect, csv_rows, findings, formations, study_storage
from lit_interp.sweep_dir import read_sweep_info

CURVES = ("val/loss", "val/acc", "val/r2", "train/loss")
TABLE_METRICS = ("val/", "train/loss")  # the final metrics the page's table shows; runs.csv has every scalar


def score_box(runs: list[RunRecord], score: str) -> go.Figure | None:
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


def formation_strip(runs: list[RunRecord], score: str, threshold: float) -> go.Figure | None:
    """Each run's formation step per head (a point per run); runs that never reach the threshold are counted."""
    figure = go.Figure()
    by_run = {run.label: formations(run, {score: threshold}) for run in runs if run.snapshots}
    for head in list(dict.fromkeys(key.split("/")[0] for formed in by_run.values() for key in formed)):
        steps = [(name, formed.get(f"{head}/{score}")) for name, formed in by_run.items()]
        reached = [(name, formed.step) for name, formed in steps if formed is not None]
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

    for directory in directories:
        info = read_sweep_info(directory) or {}
        if not info.get("space"):
            continue
        study = load_existing_study(study_storage(directory, info), info["study_name"], f"--runs {directory}")
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


def last_scores(runs: list[RunRecord]) -> list[str]:
    """Every numeric head score of the runs' last snapshots, in first-seen order."""
    heads = [scores for run in runs for scores in run.last.get("heads", {}).values()]
    return list(dict.fromkeys(name for scores in heads for name, value in scores.items() if isinstance(value, float)))


def training_curves(runs: list[RunRecord]) -> list[Figure]:
    curves = {tag: {run.label: run.series[tag] for run in runs if tag in run.series} for tag in CURVES}
    return [
        embed(step_lines(lines, tag, tag, log_y=tag.endswith("loss")), "step-axis")
        for tag, lines in curves.items()
        if lines
    ]


def sections(
    runs: list[RunRecord], parameters: list[str], thresholds: dict[str, float], directories: list[Path]
) -> list[Section]:
    found = {row["finding"]: {"runs": row["runs"], "of": row["of"]} for row in findings(runs, thresholds)}
    formed = [formation_strip(runs, score, threshold) for score, threshold in thresholds.items()]
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
        damaged_section(runs),
    ]
    return ([search] if search else []) + [section for section in candidates if section.items]


def damaged_section(runs: list[RunRecord]) -> Section:
    """Snapshot files left out of every figure and count above because they could not be read, with the reason."""
    rows = {
        f"{run.label}: {damaged.path.name}": {"reason": damaged.reason}
        for run in runs
        for damaged in run.snapshots.damaged
    }
    note = "These runs' other snapshots are counted; their formation steps may be missing a snapshot."
    return Section("Snapshots left out (unreadable)", [table(rows, "file")] if rows else [], note=note)


def runs_report(directories: list[Path], thresholds: dict[str, float]) -> tuple[str, list[dict[str, Any]]]:
    """(the HTML page, the CSV rows) for every run under the directories."""
    runs, parameters = collect(directories)
    facts = [
        ("runs", len(runs)),
        ("with snapshots", sum(bool(run.snapshots) for run in runs)),
        ("unreadable snapshots left out", sum(len(run.snapshots.damaged) for run in runs)),
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
