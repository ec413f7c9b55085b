"""The run report's figures of run-level phases: when a run memorised and generalised, and modular addition's
Fourier progress measures (Nanda et al. 2023) against step and at the last snapshot."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go

from lit_interp.formation import PHASE_CHANGES, PHASES, Formation, describe_phase, phase_steps, summary_value
from lit_interp.report.figures import BLUES, PALETTE, Axes, Frame, Scale, heatmap_grid, layout, step_lines
from lit_interp.report.html import Section, embed, plain, table
from lit_interp.report.runs_table import describe_fall, phase_changes
from lit_interp.snapshots import RunSnapshots

if TYPE_CHECKING:
    from lit_interp.analysis.phase_change import Fall

PHASE_COLOURS = ("#2ca02c", "#d62728", "#9467bd")
FINAL_KEY_TENSORS = ("logit_sum_coefficients", "logit_mean", "train_logits", "train_pairs")  # what losses_with reads


def as_points(figure: go.Figure, names: list[str]) -> go.Figure:
    """The series `names` as markers alone: measured at only some snapshots, a line between them would be a trend
    the snapshots never showed."""
    shown = {plain(name) for name in names}
    for trace in figure.data:
        if trace.name in shown and trace.mode == "lines+markers":
            trace.update(mode="markers", marker_size=8)
    return figure


def fit_legend(figure: go.Figure) -> go.Figure:
    """Legend columns and the figure's height refitted to every legend entry, the named lines and bands included
    (`step_layout` sized them for the traces alone)."""
    names = [trace.name for trace in figure.data if trace.showlegend is not False and trace.name]
    names += [shape.name for shape in figure.layout.shapes if shape.showlegend and shape.name]
    if not names:
        return figure
    entry_width = 7 * max(len(name) for name in names) + 45
    width = figure.layout.width or 540
    rows = -(-len(names) // max(1, (width - 80) // entry_width))
    figure.update_layout(legend_entrywidth=entry_width, height=380 + 22 * rows, margin_b=60 + 22 * rows)
    return figure


def mark_phases(figure: go.Figure, reached: dict[str, Formation | None]) -> go.Figure:
    """A dotted vertical line at each phase's step, named in the legend (an annotation would be misplaced once the
    page switches the step axis to log)."""
    for index, (phase_name, formed) in enumerate(reached.items()):
        if formed is not None:
            figure.add_vline(
                x=formed.step,
                line_dash="dot",
                line_color=PHASE_COLOURS[index % len(PHASE_COLOURS)],
                name=f"{phase_name} at step {formed}",
                showlegend=True,
            )
    return fit_legend(figure)


def phase_section(run: RunSnapshots) -> Section | None:
    """When the run memorised and generalised (lit_interp.formation.PHASES), or that it did not within the run."""
    reached = phase_steps(run.steps, run.summaries)
    changes = phase_changes(run.steps, run.summaries)
    if not reached and not changes:
        return None
    rows = {
        phase_name: {"step": describe_phase(formed, run.steps[-1]), "rule": PHASES[phase_name].name}
        for phase_name, formed in reached.items()
    }
    for name, fall in changes.items():
        rows[name] = {"step": describe_fall(fall), "rule": PHASE_CHANGES[name].name}
        if not math.isnan(fall.step):
            rows[name] |= {"depth": fall.depth, "relative width (small: abrupt)": fall.relative_width}
            rows[name] |= loss_bump_before(run, fall.step)
    note = (
        "First snapshot step at which the rule holds (dotted lines in the figures below); '<= s': already at the "
        "first snapshot, step s; 'not by step s': never within the run's snapshots. A phase change's step is "
        "interpolated between snapshots, with the steps at 20 % and 80 % of its fall (the band in the figures), "
        "and the probe loss's largest rise above its running minimum before it (the loss bump)."
    )
    keys = run.summaries[-1].get("fourier", {}).get("key_frequencies")
    if keys is not None:
        note += f" Key frequencies at the last snapshot (step {run.steps[-1]}): {keys or 'none'}."
    return Section("Phases of training", [table(rows, "phase")], note)


def loss_bump_before(run: RunSnapshots, step: float) -> dict[str, float]:
    """The probe loss's largest rise above its running minimum up to `step` (Olsson et al.'s bump), and where."""
    from lit_interp.analysis.phase_change import loss_bump  # the cross-run report imports no torch

    rise, at = loss_bump(run.steps, [summary.get("loss", math.nan) for summary in run.summaries], step)
    return {"loss bump before it (nats)": rise, "bump at step": at if math.isnan(at) else int(at)}


def summary_series(run: RunSnapshots, key: str) -> list[float]:
    """The summary value at `section.entry` of each snapshot, NaN where a snapshot lacks it."""
    return [math.nan if (value := summary_value(summary, key)) is None else value for summary in run.summaries]


def progress(run: RunSnapshots, entry: str) -> list[float]:
    return summary_series(run, f"progress_measures.{entry}")


def final_key_losses(run: RunSnapshots, keys: list[int]) -> dict[str, list[float]]:
    """Restricted and excluded loss of every snapshot with the last snapshot's key frequencies (the paper's)."""
    import torch

    from lit_interp.analysis import fourier

    losses: dict[str, list[float]] = {"restricted_loss": [], "excluded_loss": []}
    for snapshot in run:
        tensors = snapshot.tensors(lambda name: name in FINAL_KEY_TENSORS)
        as_torch = {name: torch.from_numpy(array) for name, array in tensors.items()}
        measured = fourier.losses_with(as_torch, keys) if len(tensors) == len(FINAL_KEY_TENSORS) else {}
        for name, values in losses.items():
            values.append(measured.get(name, math.nan))
    return losses


def log_losses(figure: go.Figure, values: list[float]) -> go.Figure:
    """A log y-axis with a tick per decade over every positive loss (a zero loss is not drawn on it)."""
    positive = [value for value in values if math.isfinite(value) and value > 0]
    if positive:
        low, high = math.floor(math.log10(min(positive))), math.ceil(math.log10(max(positive)))
        figure.update_yaxes(type="log", exponentformat="power", dtick=1, range=[low, max(high, low + 1)])
    return figure


def modular_addition_sections(run: RunSnapshots) -> list[Section]:
    """Modular addition's progress measures against step, and its Fourier spectra at the last snapshot."""
    if not any("progress_measures" in summary for summary in run.summaries):
        return []
    steps, reached = run.steps, phase_steps(run.steps, run.summaries)
    keys = list(run.summaries[-1].get("fourier", {}).get("key_frequencies") or [])
    final = final_key_losses(run, keys)
    label = f"with the last snapshot's key frequencies {keys or '(none)'}"
    losses = {
        "train loss": progress(run, "train_loss"),
        "test loss": progress(run, "test_loss"),
        f"restricted loss {label}": final["restricted_loss"],
        f"excluded loss {label}": final["excluded_loss"],
    }
    loss_figure = step_lines({name: (steps, values) for name, values in losses.items()}, "Loss", "loss")
    log_losses(loss_figure, [value for values in losses.values() for value in values])
    accuracy = {"train accuracy": progress(run, "train_acc"), "test accuracy": progress(run, "test_acc")}
    accuracy_figure = step_lines({name: (steps, values) for name, values in accuracy.items()}, "Accuracy", "accuracy")
    accuracy_figure.update_yaxes(range=[0, 1.02])
    weights = step_lines({"sum of squared weights": (steps, progress(run, "sum_squared_weights"))}, "Weights", "sum")
    gini = {
        label: (steps, summary_series(run, f"fourier.{name}"))
        for name, label in (("embed_gini", "embedding W_E"), ("neuron_logit_gini", "neuron-logit map W_out W_U"))
    }
    gini_figure = step_lines(gini, "Gini coefficient of the Fourier component norms", "Gini")
    figures = [loss_figure, accuracy_figure, weights, gini_figure]
    note = (
        "Restricted loss: over all pairs, only the key frequencies' cos/sin(w_k(a+b)) terms kept in the logits; "
        "excluded loss: on the training pairs, those terms removed. Both are measured here at every snapshot with the "
        "last snapshot's key frequencies, as the paper does (the snapshots' own progress_measures use each "
        "snapshot's keys). Loss on a log axis."
    )
    zeros = sum(value == 0 for values in losses.values() for value in values)
    if zeros:
        note += f" {zeros} loss value(s) of exactly 0 have no place on it and are not drawn."
    sections = [Section("Progress measures", [embed(mark_phases(f, reached), "step-axis") for f in figures], note)]
    spectra = fourier_spectra_section(run, keys)
    return sections + ([spectra] if spectra else [])


def component_bars(norms: np.ndarray, names: list[str], title: str) -> go.Figure:
    """One vertical bar per Fourier component (const, cos 1, sin 1, ...), from 0."""
    figure = go.Figure(
        go.Bar(
            x=names,
            y=norms,
            marker_color=PALETTE[0],
            hovertemplate="%{x}<br>norm %{y:.4g}<extra></extra>",
        )
    )
    layout(figure, title=title, height=360, width=min(1100, max(540, 9 * len(names) + 120)))
    figure.update_xaxes(title="Fourier component", type="category", tickangle=-90, tickfont_size=9)
    figure.update_yaxes(title="norm", rangemode="tozero", showgrid=True, gridcolor="#eee")
    return figure


def neuron_spectrum(norms: np.ndarray, names: list[str]) -> tuple[go.Figure, str]:
    """The neurons' 2-D Fourier norms over (a, b); colour capped at the largest entry but (const, const), the mean
    activation, which would otherwise leave every other entry pale."""
    others = norms.copy()
    others[0, 0] = 0.0
    high = float(others.max()) or 1.0
    axes = Axes("b component", "a component", names, names)
    scale = Scale(BLUES, 0.0, high, "norm over neurons")
    figure = heatmap_grid([Frame("", [norms])], ["all neurons"], scale, axes, title="Neurons in the 2-D Fourier basis")
    figure.update_layout(width=720, height=720)
    note = (
        f"Entry (const, const) is the neurons' mean activation ({float(norms[0, 0]):.4g}); the colour scale stops at "
        f"the largest other entry ({high:.4g}), so that entry shows at the top colour (hover for its value)."
    )
    return figure, note


def frequency_histogram(frequency: np.ndarray, fraction: np.ndarray | None, keys: list[int], p: int) -> go.Figure:
    """Neurons per frequency (0: no variance), split by whether that frequency explains at least half a neuron's
    variance (what makes a key frequency), key frequencies marked."""
    from lit_interp.analysis import fourier

    frequency = frequency.astype(np.int64)
    explained = np.zeros(len(frequency), bool)
    if fraction is not None:
        explained = np.nan_to_num(fraction) >= fourier.NEURON_FRACTION
    bins = np.arange(fourier.n_frequencies(p) + 1)
    figure = go.Figure()
    for name, chosen, colour in (
        (f"frequency explains >= {fourier.NEURON_FRACTION:g} of the neuron's variance", explained, PALETTE[0]),
        ("explains less", ~explained, "#bbb"),
    ):
        counts = np.bincount(frequency[chosen], minlength=len(bins))[: len(bins)]
        figure.add_trace(go.Bar(x=bins, y=counts, name=name, marker_color=colour, hovertemplate="%{x}: %{y}"))
    needed = max(1, math.ceil(fourier.KEY_NEURON_SHARE * len(frequency)))
    figure.add_hline(y=needed, line_dash="dot", line_color="grey", annotation_text=f"key: >= {needed} neurons")
    for key in keys:
        figure.add_vline(x=key, line_color=PALETTE[1], line_width=1, line_dash="dot", annotation_text=f"key {key}")
    layout(figure, title="Neurons per frequency at the last snapshot", height=380, width=720)
    figure.update_layout(barmode="stack", legend=dict(orientation="h", x=0, y=-0.2, yanchor="top", font_size=10))
    figure.update_xaxes(title="frequency k (0: no variance)", dtick=1 if len(bins) <= 30 else 5)
    figure.update_yaxes(title="neurons", showgrid=True, gridcolor="#eee")
    return figure


def fourier_spectra_section(run: RunSnapshots, keys: list[int]) -> Section | None:
    """At the last snapshot: the Fourier norms of the embedding and the neuron-logit map, the neurons' 2-D spectrum
    and their frequencies."""
    from lit_interp.analysis import fourier

    last = run[-1]
    tensors: dict[str, Any] = last.tensors(
        lambda name: name.endswith("fourier_norms") or name.startswith("neuron_frequency")
    )
    items, notes = [], []
    for name, title in (
        ("embed_fourier_norms", "Fourier components of the embedding W_E"),
        ("neuron_logit_fourier_norms", "Fourier components of W_out W_U (over the output)"),
    ):
        if name in tensors:
            items.append(embed(component_bars(tensors[name], fourier.component_names(len(tensors[name])), title)))
    if "neuron_fourier_norms" in tensors:
        norms = tensors["neuron_fourier_norms"]
        figure, note = neuron_spectrum(norms, fourier.component_names(len(norms)))
        items.append(embed(figure))
        notes.append(note)
    spectra = [tensors[name] for name in ("embed_fourier_norms", "neuron_fourier_norms") if name in tensors]
    if "neuron_frequency" in tensors and spectra:
        p = len(spectra[0])  # the spectra have p components
        histogram = frequency_histogram(tensors["neuron_frequency"], tensors.get("neuron_frequency_fraction"), keys, p)
        items.append(embed(histogram))
    if not items:
        return None
    return Section(f"Fourier spectra at the last snapshot (step {last.step})", items, " ".join(notes))


def mark_band(figure: go.Figure, fall: Fall) -> go.Figure:
    """The phase change's 20-80 % span shaded and its halfway step dotted, both named in the legend."""
    if not math.isnan(fall.step):
        figure.add_vrect(
            x0=fall.start,
            x1=fall.end,
            fillcolor="rgba(214,39,40,0.12)",
            line_width=0,
            name=f"phase change: 20-80 % of the fall, steps {fall.start:.0f} to {fall.end:.0f}",
            showlegend=True,
        )
        figure.add_vline(
            x=fall.step,
            line_dash="dot",
            line_color=PHASE_COLOURS[1],
            name=f"halfway at step {fall.step:.0f}",
            showlegend=True,
        )
    return fit_legend(figure)


def in_context_section(run: RunSnapshots) -> Section | None:
    """The in-context loss against step with the phase-change band; the learning coefficient's points beside it."""
    changes = phase_changes(run.steps, run.summaries)
    fall = changes.get("in_context_phase_change")
    if fall is None:
        return None
    names = {
        "in_context_loss": "in-context loss (repeated half minus first)",
        "first_half_loss": "first half",
        "repeated_half_loss": "repeated half",
    }
    series = {
        label: (
            run.steps,
            [math.nan if (v := summary_value(s, f"in_context.{key}")) is None else v for s in run.summaries],
        )
        for key, label in names.items()
    }
    figures = [mark_band(step_lines(series, "In-context loss", "loss (nats)"), fall)]
    measured = [(s["step"], s["learning_coefficient"]) for s in run.summaries if "learning_coefficient" in s]
    estimates = [(step, llc.get("llc_mean"), llc.get("llc_std")) for step, llc in measured]
    estimates = [(step, mean, std) for step, mean, std in estimates if isinstance(mean, (int, float))]
    if estimates:
        figure = step_lines(
            {"LLC": ([e[0] for e in estimates], [e[1] for e in estimates])}, "Local learning coefficient", "LLC"
        )
        as_points(figure, ["LLC"])
        spread = [math.nan if std is None else std for _, _, std in estimates]
        figure.data[0].update(error_y=dict(type="data", array=spread, visible=True, thickness=1))
        figures.append(mark_band(figure, fall))
    note = (
        "Loss on [prefix, r, r]: the repeated copy's minus the first copy's. The band is where it covers 20 % to 80 % "
        "of its fall. The local learning coefficient (devinterp's SGLD estimate, error bars: spread over chains) is "
        "measured at the expensive snapshots only: points, not a line."
    )
    return Section("In-context learning", [embed(figure, "step-axis") for figure in figures], note)
