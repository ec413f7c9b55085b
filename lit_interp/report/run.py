"""The run report: a run's snapshots (analysis/step_*.json + .safetensors) and training curves against step."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from lit_interp import runlogs
from lit_interp.formation import formation, threshold_values
from lit_interp.heads import PER_HEAD_TENSOR, head_labels
from lit_interp.report.checkpoint import head_table
from lit_interp.report.figures import (
    Axes,
    Frame,
    Scale,
    attention_scale,
    block_labels,
    data_scale,
    heatmap_grid,
    shrink,
    step_lines,
)
from lit_interp.report.html import Preformatted, Section, embed, render, table
from lit_interp.report.phase_figures import as_points, in_context_section, modular_addition_sections, phase_section
from lit_interp.snapshots import RunSnapshots, Snapshot

SLIDER_MAX_SIDE = 128  # circuits larger than this are shown as block means in the slider figures
MAX_SLIDER_FRAMES = 200
MAX_SLIDER_VALUES = 300_000  # shared by the slider figures of a page; beyond it, frames are thinned evenly
SLIDER_GROUPS = {
    "ov_circuit": ("Full OV circuits across training", "output", "source", "logit"),
    "qk_circuit": ("QK circuits across training", "key", "query", "score"),
}


def series(summaries: list[dict[str, Any]], get) -> list[float]:
    """One value per snapshot; NaN where a snapshot lacks it (e.g. no hook sweep at that step)."""
    values = []
    for summary in summaries:
        try:
            value = get(summary)
            values.append(math.nan if value is None else float(value))
        except (KeyError, TypeError):
            values.append(math.nan)
    return values


def present_at_every_snapshot(summaries: list[dict[str, Any]], get) -> bool:
    """Whether every snapshot holds the value (null included: a NaN that was measured); False for a value computed
    at only some snapshots (expensive analyses, the hook sweep every k-th snapshot)."""
    try:
        for summary in summaries:
            get(summary)
    except (KeyError, TypeError):
        return False
    return True


def sparse_series(summaries: list[dict[str, Any]]) -> dict[str, set[str]]:
    """The head scores and hooks measured at only some snapshots: drawn as points, not lines."""
    heads = dict.fromkeys(head for summary in summaries for head in summary.get("heads", {}))
    scores = {score for summary in summaries for by_head in summary.get("heads", {}).values() for score in by_head}
    hooks = {hook for summary in summaries for hook in summary.get("hooks", {})}
    return {
        "heads": {
            score
            for score in scores
            if not all(present_at_every_snapshot(summaries, lambda s, h=h, c=score: s["heads"][h][c]) for h in heads)
        },
        "hooks": {
            hook
            for hook in hooks
            if not present_at_every_snapshot(summaries, lambda s, h=hook: s["hooks"][h]["mean_ablation_loss"])
        },
    }


def trajectories(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-step series of the loss, metrics, every head score and every hook's mean-ablation loss."""
    metrics = dict.fromkeys(name for summary in summaries for name in summary.get("metrics", {}))
    heads = dict.fromkeys(head for summary in summaries for head in summary.get("heads", {}))
    scores = dict.fromkeys(
        score for summary in summaries for by_head in summary.get("heads", {}).values() for score in by_head
    )
    hooks = dict.fromkeys(hook for summary in summaries for hook in summary.get("hooks", {}))
    return {
        "steps": [summary["step"] for summary in summaries],
        "loss": series(summaries, lambda s: s["loss"]),
        "metrics": {name: series(summaries, lambda s, name=name: s["metrics"][name]) for name in metrics},
        "heads": {
            score: {head: series(summaries, lambda s, h=head, c=score: s["heads"][h][c]) for head in heads}
            for score in scores
        },
        "hooks": {hook: series(summaries, lambda s, h=hook: s["hooks"][h]["mean_ablation_loss"]) for hook in hooks},
    }


def run_report(run: RunSnapshots, title: str) -> str:
    """Formation steps, attention and circuits on a step slider, scores against step, training curves, head table."""
    summaries = run.summaries
    data = trajectories(summaries)
    steps = data["steps"]
    last = summaries[-1]
    probe, scores, hooks = score_sections(data, sparse_series(summaries))
    attention, circuits = slider_sections(run.snapshots)
    table = head_table(last)
    if table is not None:
        table.heading = f"Heads at the last snapshot (step {last['step']})"
    # What formed and when first, then the training curves behind it, then the detail.
    sections = [
        formation_section(data),
        phase_section(run),
        in_context_section(run),
        *modular_addition_sections(run),
        attention,
        scores,
        *circuits,
        probe,
        training_section(run.run_dir),
        hooks,
        table,
        config_section(run.run_dir),
    ]
    facts = [
        ("task", last["task"]),
        ("snapshots", len(steps)),
        ("steps", f"{steps[0]} to {steps[-1]}"),
        ("run", str(run.run_dir)),
    ]
    log_steps = steps[0] > 0 and steps[-1] >= 100 * steps[0]  # log-spaced snapshots: the early steps need room
    return render(
        "report.html.j2",
        title=title,
        facts=facts,
        sections=[s for s in sections if s],
        step_axis_toggle=True,
        log_steps=log_steps,
    )


def formation_section(data: dict[str, Any]) -> Section | None:
    """The step at which each head's score first reaches its threshold: when the circuit forms."""
    rows: dict[str, dict[str, Any]] = {}
    for score, threshold in threshold_values().items():
        for head, values in data["heads"].get(score, {}).items():
            formed = formation(data["steps"], values, threshold)
            if formed is not None:
                rows.setdefault(head, {})[f"{score} >= {threshold:g}"] = formed
    if not rows:
        return None
    note = (
        "First snapshot step at which a head's score is at or above the threshold (stars in the figures below); "
        "'<= s': already there at the first snapshot, step s."
    )
    return Section("When the heads formed", [table(rows, "head")], note)


def training_section(run: Path) -> Section | None:
    """The run's logged scalars, one figure per metric name (train/loss with val/loss, val/acc, ...)."""
    scalars = runlogs.read_scalars(run)
    groups: dict[str, dict[str, runlogs.Series]] = {}
    for tag, points in scalars.items():
        if tag != "epoch" and points[0]:
            parts = tag.split("/")
            # stage/metric: train/loss beside val/loss; group/metric/part: one figure per group/metric
            group, name = ("/".join(parts[:-1]), parts[-1]) if len(parts) >= 3 else (parts[-1], tag)
            groups.setdefault(group, {})[name] = points
    groups = {group: tags for group, tags in groups.items() if max(len(steps) for steps, _ in tags.values()) >= 2}
    figures = []
    for name, tags in sorted(groups.items(), key=lambda item: ("loss" not in item[0], "/" in item[0], item[0])):
        positive = all(value > 0 for _, values in tags.values() for value in values)
        figure = step_lines(tags, name, name, log_y="loss" in name and positive)
        figures.append(embed(figure, "step-axis"))
    return (
        Section("Training curves", figures, "Scalars the run logged (TensorBoard event files, or metrics.csv).")
        if figures
        else None
    )


def score_sections(data: dict[str, Any], sparse: dict[str, set[str]]) -> tuple[Section, Section | None, Section | None]:
    """(probe loss and metrics, every head score with a figure per score, the hook sweep) against step; the `sparse`
    series (measured at only some snapshots) as points."""
    steps, loss = data["steps"], (data["steps"], data["loss"])
    figures = [embed(step_lines({"probe loss": loss}, "Probe loss", "loss", log_y=True), "step-axis")]
    for name, values in data["metrics"].items():
        figures.append(embed(step_lines({f"probe {name}": (steps, values)}, f"Probe {name}", name), "step-axis"))
    probe = Section("Probe loss and metrics at each snapshot", figures)
    score_figures = []
    for score, by_head in data["heads"].items():
        series = {head: (steps, values) for head, values in by_head.items()}
        figure = step_lines(series, score, score, loss, threshold_values().get(score))
        if score in sparse["heads"]:
            as_points(figure, list(series))
        score_figures.append(embed(figure, "step-axis"))
    note = (
        "One figure per score, a line per head; the probe loss (dashed, right axis) beside it. "
        "A score measured at only some snapshots (an expensive analysis) is drawn as points, not a line. "
        "Hover over a column name of the head table for what a score measures."
    )
    scores = Section("Head scores and ablation losses against step", score_figures, note) if score_figures else None
    hooks = None
    if data["hooks"]:
        series = {hook: (steps, values) for hook, values in data["hooks"].items()}
        figure = step_lines(series, "Probe loss with one hook mean-ablated", "loss", loss)
        as_points(figure, [hook for hook in series if hook in sparse["hooks"]])
        note = "Hooks swept at only some snapshots are drawn as points, not lines." if sparse["hooks"] else ""
        hooks = Section("Mean-ablation sweep over hooks against step", [embed(figure, "step-axis")], note)
    return probe, scores, hooks


def thin(count: int, values_per_frame: int, budget: int = MAX_SLIDER_VALUES) -> list[int]:
    """Indices of at most budget / values_per_frame frames, evenly spread, first and last kept."""
    keep = max(2, budget // max(values_per_frame, 1))
    if count <= keep:
        return list(range(count))
    return sorted({round(i * (count - 1) / (keep - 1)) for i in range(keep)})


def slider_sections(snapshots: list[Snapshot]) -> tuple[Section | None, list[Section]]:
    """Attention patterns, and circuits, per head with a slider over the snapshot steps (one shared size budget)."""

    def wanted(name: str) -> bool:
        match = PER_HEAD_TENSOR.fullmatch(name)
        return name == "attention_patterns" or bool(match and match["group"] in SLIDER_GROUPS)

    # More positions than a slider can show are never read: a long run may hold thousands of snapshots.
    snapshots = [snapshots[index] for index in thin(len(snapshots), 1, budget=MAX_SLIDER_FRAMES)]
    loaded = [(snapshot.step, snapshot.tensors(wanted)) for snapshot in snapshots]
    attention = [
        (step, tensors["attention_patterns"])
        for step, tensors in loaded
        if tensors.get("attention_patterns", np.empty(0)).ndim == 4
    ]
    circuits = {group: circuit_frames(loaded, group) for group in SLIDER_GROUPS}
    circuits = {group: frames for group, frames in circuits.items() if frames}
    # Attention first (the slider the report is for), up to half the budget; the circuits share what it leaves.
    attention_values = sum(array.size for _, array in attention)
    budget = MAX_SLIDER_VALUES // 2 if circuits else MAX_SLIDER_VALUES
    circuit_budget = (MAX_SLIDER_VALUES - min(attention_values, budget)) // max(1, len(circuits))
    attention_section, sections = None, []
    if attention:
        attention_section = attention_slider(attention, budget)
    for group, (frames, titles, shape, block) in circuits.items():
        heading, x_name, y_name, value_name = SLIDER_GROUPS[group]
        axes = Axes(x_name, y_name, block_labels(shape[1], block), block_labels(shape[0], block))
        figure = step_slider(frames, titles, None, axes, circuit_budget, value_name)
        note = "Colour centred on 0 and fixed across steps." + (
            f" Shown as means over {block}x{block} blocks." if block > 1 else ""
        )
        sections.append(Section(heading, [embed(figure)], note))
    return attention_section, sections


def frame_side(n_matrices: int, budget: int) -> int:
    """The largest side (at most SLIDER_MAX_SIDE) at which two frames of `n_matrices` square matrices fit `budget`."""
    return max(4, min(SLIDER_MAX_SIDE, math.isqrt(max(budget // (2 * max(n_matrices, 1)), 1))))


def attention_slider(attention: list[tuple[int, np.ndarray]], budget: int) -> Section:
    """Each head's mean pattern on a step slider, block means past the side the budget allows (any n_ctx)."""
    n_layers, n_heads, n_query, n_key = attention[-1][1].shape
    side = frame_side(n_layers * n_heads, budget)
    frames = [(step, [shrink(m, side)[0] for layer in array for m in layer]) for step, array in attention]
    block = shrink(attention[-1][1][0, 0], side)[1]
    axes = Axes("key_pos", "query_pos", block_labels(n_key, block), block_labels(n_query, block))
    figure = step_slider(frames, head_labels(n_layers, n_heads), attention_scale(), axes, budget)
    note = "Mean attention on the probe batch; move the slider to step through the snapshots (colour fixed to [0, 1])."
    note += f" Shown as means over {block}x{block} blocks of positions." if block > 1 else ""
    return Section("Attention patterns across training", [embed(figure)], note)


def circuit_frames(loaded: list[tuple[int, dict[str, np.ndarray]]], group: str):
    """(step, per-head matrices shrunk to fit a quarter of the budget) of steps with the last step's heads; titles,
    shape, block."""
    frames = [
        (step, {name: array for name, array in tensors.items() if name.startswith(group + ".") and array.ndim == 2})
        for step, tensors in loaded
    ]
    frames = [(step, matrices) for step, matrices in frames if matrices]
    if not frames:
        return None
    heads = list(frames[-1][1])
    shape = frames[-1][1][heads[0]].shape
    side = frame_side(len(heads), MAX_SLIDER_VALUES // 4)
    block = shrink(frames[-1][1][heads[0]], side)[1]
    kept = [
        (step, [shrink(matrices[head], side)[0] for head in heads])
        for step, matrices in frames
        if list(matrices) == heads
    ]
    return kept, [head.rsplit(".", 1)[-1] for head in heads], shape, block


def step_slider(
    frames: list[tuple[int, list[np.ndarray]]],
    titles: list[str],
    scale: Scale | None,
    axes: Axes,
    budget: int,
    value_name: str = "value",
):
    """A heatmap grid with a slider over steps, frames thinned to `budget` values, one colour scale for every frame."""
    last = frames[-1][1]
    keep = thin(len(frames), sum(matrix.size for matrix in last), budget)
    built = [Frame(str(frames[index][0]), frames[index][1]) for index in keep]
    built = [frame for frame in built if [m.shape for m in frame.matrices] == [m.shape for m in last]]
    scale = scale or data_scale([m for frame in built for m in frame.matrices], value_name)
    return heatmap_grid(built, titles, scale, axes, slider_prefix="step")


def config_section(run: Path) -> Section | None:
    path = run / "config.yaml"
    if not path.is_file():
        return None
    try:
        text = path.read_text(errors="replace")[:50_000]
    except OSError:
        return None
    return Section("Run configuration", [Preformatted(f"{path.name}: the config this run was trained with", text)])
