"""The cross-run report (`analyze --runs`): findings and formation steps across runs, score distributions, curves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from lit_interp.formation import PHASE_CHANGES, PHASES, describe_phase
from lit_interp.report.figures import as_floats, layout, step_layout, step_lines, value_axis
from lit_interp.report.html import Section, embed, plain, render, table
from lit_interp.report.runs_table import (
    CURVES,
    RunRecord,
    collect,
    csv_rows,
    describe_fall,
    findings,
    formations,
    key_frequencies,
    phase_changes,
    phase_columns,
    phases,
    sweep_study,
)
from lit_interp.runlogs import Series
from lit_interp.sweep_dir import read_sweep_info

TABLE_METRICS = ("val/", "train/loss")  # the final metrics the page's table shows; runs.csv has every scalar
# Past this many runs a figure never draws a trace per run: curves become the median and a 10-90 % band across runs,
# box plots their quartiles and outliers (the page stays small and readable whatever the number of runs).
MAX_RUNS_DRAWN = 30


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
                boxpoints="all" if len(runs) <= MAX_RUNS_DRAWN else "outliers",
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
        add_strip(figure, plain(head), [(name, None if formed is None else formed.step) for name, formed in steps])
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


def add_strip(figure: go.Figure, name: str, steps: list[tuple[str, float | None]]) -> None:
    """One box of points, a run's step each (None: not reached); named with how many of the runs reached it."""
    reached = [(run, step) for run, step in steps if step is not None]
    if not reached:
        return
    figure.add_trace(
        go.Box(
            y=[step for _, step in reached],
            name=f"{name} ({len(reached)}/{len(steps)})",
            boxpoints="all" if len(steps) <= MAX_RUNS_DRAWN else "outliers",
            jitter=0.4,
            pointpos=0,
            text=[plain(run) for run, _ in reached],
            hovertemplate="%{text}<br>step %{y}<extra></extra>",
        )
    )


def run_phase_steps(run: RunRecord) -> dict[str, float | None]:
    """Each phase and phase change the run's snapshots measure -> its step (None: not within the run)."""
    reached: dict[str, float | None] = {name: None if f is None else f.step for name, f in phases(run).items()}
    for name, fall in phase_changes(run.snapshots.steps, run.snapshots.summaries).items():
        reached[name] = None if math.isnan(fall.step) else fall.step
    return reached


def phase_strip(runs: list[RunRecord]) -> go.Figure | None:
    """Each run's step of each run-level phase (a point per run); the count is of the runs that reached it."""
    figure = go.Figure()
    by_run = {run.label: run_phase_steps(run) for run in runs if run.snapshots}
    for phase_name in (*PHASES, *PHASE_CHANGES):
        add_strip(
            figure,
            phase_name,
            [(name, reached[phase_name]) for name, reached in by_run.items() if phase_name in reached],
        )
    if not figure.data:
        return None
    layout(figure, title="Phases of training", height=340, width=max(360, 140 + 110 * len(figure.data)))
    figure.update_layout(showlegend=False, yaxis_title="step", yaxis_rangemode="tozero")
    return figure


def phases_section(runs: list[RunRecord]) -> Section:
    """Per run: when it memorised and generalised (lit_interp.formation.PHASES) and its final key frequencies."""
    rows = {}
    for run in runs:
        reached = phases(run) if run.snapshots else {}
        last_step = run.snapshots.steps[-1] if run.snapshots else 0
        row: dict[str, Any] = {name: describe_phase(formed, last_step) for name, formed in reached.items()}
        changes = phase_changes(run.snapshots.steps, run.snapshots.summaries) if run.snapshots else {}
        row |= {name: describe_fall(fall) for name, fall in changes.items()}
        keys = key_frequencies(run)
        if keys is not None:
            row["key frequencies at the last snapshot"] = ", ".join(map(str, keys)) or "none"
        if row:
            rows[run.label] = row
    figure = phase_strip(runs)
    rules = "; ".join(f"{name}: {phase.name}" for name, phase in PHASES.items())
    changes = "; ".join(f"{name}: {change.name}" for name, change in PHASE_CHANGES.items())
    note = (
        f"The first snapshot step at which {rules}. '<= s': already at the run's first snapshot, step s; 'not by "
        f"step s': never within the run. Phase changes, interpolated between snapshots ({changes}), with the steps "
        "at 20 % and 80 % of the fall. runs.csv has <phase>_at, the phase changes' steps and key_frequencies."
    )
    items = ([embed(figure)] if figure else []) + ([table(rows, "run")] if rows else [])
    return Section("Phases of training across runs", items, note=note)


def escaped(value: Any) -> Any:
    """Every string in a JSON-like value (keys too) escaped, so plotly shows it literally."""
    if isinstance(value, str):
        return plain(value)
    if isinstance(value, dict):
        return {escaped(key): escaped(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [escaped(item) for item in value]
    return value


def escaped_distribution(distribution):
    import optuna

    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return optuna.distributions.CategoricalDistribution(escaped(list(distribution.choices)))
    return distribution


def escaped_copy(study):
    """An in-memory copy of the study for Optuna's plots, whose parameter names and values, attributes and anything
    else a plot shows as text are escaped: a name such as `<a href=...>` is drawn as written, never as a link. Trials
    keep their numbers (one that did not complete is a FAIL without values here, which no plot draws)."""
    import optuna

    copy = optuna.create_study(directions=study.directions)
    for trial in study.get_trials(deepcopy=False):
        if trial.state != optuna.trial.TrialState.COMPLETE:
            copy.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
            continue
        copy.add_trial(
            optuna.trial.create_trial(
                params={plain(name): escaped(value) for name, value in trial.params.items()},
                distributions={plain(name): escaped_distribution(d) for name, d in trial.distributions.items()},
                values=trial.values,
                user_attrs=escaped(trial.user_attrs),
                intermediate_values=trial.intermediate_values,
            )
        )
    return copy


def importances(study):
    """Optuna's importance plot with its PED-ANOVA evaluator, which needs nothing beyond Optuna (Optuna 4.0
    defaults to fANOVA, which needs scikit-learn)."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    return optuna.visualization.plot_param_importances(study, evaluator=evaluator)


def optuna_section(directories: list[Path]) -> Section | None:
    """Optuna's own plots of a search (importances need nothing beyond Optuna: its default PED-ANOVA evaluator)."""
    import optuna

    for directory in directories:
        info = read_sweep_info(directory) or {}
        if not info.get("space"):
            continue
        study = sweep_study(Path(directory))
        complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
        if len(complete) < 2:
            return Section("Search", [], note=f"{len(complete)} complete trial(s): Optuna's plots need at least 2.")
        items, notes, drawn = [], [], escaped_copy(study)
        plots = [
            ("parameter importances", importances),
            ("slice", optuna.visualization.plot_slice),
            ("parallel coordinates", optuna.visualization.plot_parallel_coordinate),
        ]
        for name, plot in plots:
            try:
                items.append(embed(plot(drawn)))
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


def band(lines: dict[str, Series], tag: str) -> go.Figure:
    """At each step, the median of `tag` across the runs that logged it, and the band from their 10th to 90th
    percentile: one figure of three traces for any number of runs."""
    by_step: dict[int, list[float]] = {}
    for steps, values in lines.values():
        for step, value in zip(steps, values):
            if value is not None and math.isfinite(value):
                by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    low, median, high = np.array([np.quantile(by_step[step], (0.1, 0.5, 0.9)) for step in steps]).T
    counts = [len(by_step[step]) for step in steps]
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(x=steps, y=as_floats(low), mode="lines", line_width=0, showlegend=False, hoverinfo="skip")
    )
    figure.add_trace(
        go.Scatter(
            x=steps,
            y=as_floats(high),
            mode="lines",
            line_width=0,
            fill="tonexty",
            fillcolor="rgba(31,119,180,0.25)",
            name="10-90 % of runs",
            hoverinfo="skip",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=steps,
            y=as_floats(median),
            customdata=np.stack([low, high, counts], axis=-1),
            mode="lines",
            line_color="rgb(31,119,180)",
            name="median across runs",
            hovertemplate="step %{x}<br>median %{y:.4g}<br>10-90 %: %{customdata[0]:.4g} to %{customdata[1]:.4g}"
            "<br>over %{customdata[2]} runs<extra></extra>",
        )
    )
    step_layout(figure, ["median across runs", "10-90 % of runs"], plain(tag), False)
    figure.update_layout(
        yaxis=dict(title=plain(tag), showgrid=True, gridcolor="#eee", **value_axis(median, log=tag.endswith("loss")))
    )
    return figure


def training_curves(runs: list[RunRecord]) -> Section:
    curves = {tag: {run.label: run.series[tag] for run in runs if tag in run.series} for tag in CURVES}
    if len(runs) <= MAX_RUNS_DRAWN:
        figures = [step_lines(lines, tag, tag, log_y=tag.endswith("loss")) for tag, lines in curves.items() if lines]
        return Section("Training curves", [embed(figure, "step-axis") for figure in figures])
    note = (
        f"{len(runs)} runs, more than {MAX_RUNS_DRAWN}: each curve is the median across the runs that logged that "
        "step, with the band from their 10th to their 90th percentile (hover: over how many runs). runs.csv has "
        "every run's final values."
    )
    return Section(
        "Training curves", [embed(band(lines, tag), "step-axis") for tag, lines in curves.items() if lines], note=note
    )


def sections(
    runs: list[RunRecord], parameters: list[str], thresholds: dict[str, float], directories: list[Path]
) -> list[Section]:
    found = {row["finding"]: {"runs": row["runs"], "of": row["of"]} for row in findings(runs, thresholds)}
    formed = [formation_strip(runs, score, threshold) for score, threshold in thresholds.items()]
    boxes = [score_box(runs, score) for score in last_scores(runs)]
    shown_above = {key for run in runs for key in phase_columns(run)}  # in the phases section
    rows = {
        row.pop("run"): {
            key: value
            for key, value in row.items()
            if ("/" not in key or key.startswith(TABLE_METRICS)) and key not in shown_above
        }
        for row in csv_rows(runs, parameters, {})
    }
    search = optuna_section(directories)
    candidates = [
        Section("Findings across runs", [table(found, "finding")] if found else [], note=FINDINGS_NOTE),
        phases_section(runs),
        Section("When each circuit forms", [embed(figure) for figure in formed if figure], note=FORMS_NOTE),
        Section("Head scores at the last snapshot", [embed(figure) for figure in boxes if figure]),
        training_curves(runs),
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
