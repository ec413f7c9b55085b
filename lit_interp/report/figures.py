"""Plotly figures of analysis results: heatmap grids with honest colour scales and sliders, bars, lines against step."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

import numpy as np
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lit_interp.formation import formation
from lit_interp.report.html import plain

BLUES = plotly.colors.sequential.Blues
RED_BLUE = plotly.colors.diverging.RdBu[::-1]  # blue below zero, red above
PALETTE = plotly.colors.qualitative.Dark24 + plotly.colors.qualitative.Light24  # 48 distinct colours, then dashes
DASHES = ("solid", "dash", "dot", "dashdot")
FONT = dict(family="system-ui, sans-serif", size=12)
CELL_PIXELS = 240  # side of one heatmap in a grid
Series = tuple[list[int], list[float]]  # (steps, values)


@dataclass
class Scale:
    """A colour scale with fixed ends, so every frame and every head of a figure reads the same."""

    colours: list[str]
    low: float
    high: float
    value_name: str


def attention_scale(value_name: str = "attention") -> Scale:
    return Scale(BLUES, 0.0, 1.0, value_name)


def cosine_scale() -> Scale:
    return Scale(RED_BLUE, -1.0, 1.0, "cosine similarity")


def data_scale(arrays: list[np.ndarray], value_name: str) -> Scale:
    """Diverging and centred on 0 when any value is negative, else from 0 (never from the minimum) to the maximum."""
    finite = [a[np.isfinite(a)] for a in arrays]
    low = min((float(a.min()) for a in finite if a.size), default=0.0)
    high = max((float(a.max()) for a in finite if a.size), default=1.0)
    if low < 0:
        bound = max(-low, high) or 1.0
        return Scale(RED_BLUE, -bound, bound, value_name)
    return Scale(BLUES, 0.0, high or 1.0, value_name)


@dataclass
class Axes:
    """What a heatmap's rows and columns are, for axis titles and hover text."""

    x_name: str
    y_name: str
    x_labels: list[str] | None = None
    y_labels: list[str] | None = None
    square: bool = True


@dataclass
class Frame:
    """The matrices of every subplot at one slider position (one step, or one example)."""

    label: str
    matrices: list[np.ndarray]
    x_labels: list[str] | None = None  # this frame's own axis labels (e.g. position:token of one example)
    y_labels: list[str] | None = None


def shrink(matrix: np.ndarray, max_side: int) -> tuple[np.ndarray, int]:
    """Block means so that neither side exceeds max_side, and the block size (1 when unchanged)."""
    block = max(1, math.ceil(max(matrix.shape) / max_side))
    if block == 1:
        return matrix, 1
    rows, columns = (-(-side // block) * block for side in matrix.shape)
    padded = np.full((rows, columns), np.nan, np.float32)
    padded[: matrix.shape[0], : matrix.shape[1]] = matrix
    with np.errstate(invalid="ignore"), np.testing.suppress_warnings() as warnings:
        warnings.filter(RuntimeWarning)
        means = np.nanmean(padded.reshape(rows // block, block, columns // block, block), axis=(1, 3))
    return means.astype(np.float32), block


def block_labels(length: int, block: int) -> list[str] | None:
    """'a-b' index ranges of each block, or None for unshrunk axes (plain integer positions)."""
    if block == 1:
        return None
    return [f"{start}-{min(start + block, length) - 1}" for start in range(0, length, block)]


def escaped(labels: list[str] | None) -> list[str] | None:
    return None if labels is None else [plain(label) for label in labels]


def hover_template(axes: Axes, title: str, value_name: str) -> str:
    row, column = f"{plain(axes.y_name)} %{{y}}", f"{plain(axes.x_name)} %{{x}}"
    return f"{row}<br>{column}<br>{plain(value_name)} %{{z:.4g}}<extra>{plain(title)}</extra>"


def heatmap_grid(
    frames: list[Frame],
    titles: list[str],
    scale: Scale,
    axes: Axes,
    slider_prefix: str = "step",
    columns: int = 4,
    title: str | None = None,
    reason: str | None = None,
) -> go.Figure:
    """One heatmap per title (e.g. per head) on one colour scale; with several frames, a slider picks the frame.

    The figure first shows the last frame (the latest step, or the first example when the labels say so).
    When no frame holds a finite value the figure is an empty one saying so (plotly cannot range an all-NaN
    heatmap), with `reason` (why the values are NaN) when known.
    """
    if not any(np.isfinite(matrix).any() for frame in frames for matrix in frame.matrices):
        return empty_figure(title or ", ".join(titles), reason)
    return drawn_heatmap_grid(frames, titles, scale, axes, slider_prefix, columns, title)


def drawn_heatmap_grid(
    frames: list[Frame],
    titles: list[str],
    scale: Scale,
    axes: Axes,
    slider_prefix: str,
    columns: int,
    title: str | None,
) -> go.Figure:
    n = len(titles)
    columns = min(n, columns)
    rows = -(-n // columns)
    figure = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=[plain(title) for title in titles],
        horizontal_spacing=0.35 / columns if columns > 1 else 0.0,
        vertical_spacing=0.25 / rows if rows > 1 else 0.0,
    )
    shown = frames[-1] if slider_prefix == "step" else frames[0]
    for index, (subplot_title, matrix) in enumerate(zip(titles, shown.matrices, strict=True)):
        trace = go.Heatmap(
            z=matrix.astype(np.float32),
            x=escaped(shown.x_labels or axes.x_labels),
            y=escaped(shown.y_labels or axes.y_labels),
            coloraxis="coloraxis",
            hovertemplate=hover_template(axes, subplot_title, scale.value_name),
        )
        figure.add_trace(trace, row=index // columns + 1, col=index % columns + 1)
    grid_axes(figure, n, columns, axes)
    figure.update_layout(
        coloraxis=dict(
            colorscale=scale.colours,
            cmin=scale.low,
            cmax=scale.high,
            colorbar=dict(title=plain(scale.value_name), thickness=12),
        )
    )
    height = rows * CELL_PIXELS + 90
    if len(frames) > 1:
        add_slider(figure, frames, slider_prefix, list(range(n)))
        height += 90
    integer_ticks(figure, shown.matrices[0].shape, axes)
    if shown.x_labels or axes.x_labels:
        figure.update_xaxes(type="category")  # else plotly reads labels such as "0-2" as dates
    if shown.y_labels or axes.y_labels:
        figure.update_yaxes(type="category")
    width = min(columns * (CELL_PIXELS + 50) + 130, 1100)
    if len(frames) > 1:
        width = max(width, 560)  # a slider over many steps needs room for its labels
    layout(figure, title=title, height=height + (30 if title else 0), width=width)
    figure.update_layout(margin_t=90 if title else 50)  # room for the subplot titles under the figure's own
    return figure


def grid_axes(figure: go.Figure, n: int, columns: int, axes: Axes) -> None:
    """Rows top to bottom; square cells where asked; axis titles on the left column and the bottom row."""
    figure.update_yaxes(autorange="reversed", constrain="domain")
    figure.update_xaxes(constrain="domain")
    for index in range(n):
        suffix = "" if index == 0 else str(index + 1)
        if axes.square:
            figure.layout[f"yaxis{suffix}"].scaleanchor = f"x{suffix}"
        if index % columns == 0:
            figure.layout[f"yaxis{suffix}"].title = plain(axes.y_name)
        if index >= n - columns:
            figure.layout[f"xaxis{suffix}"].title = plain(axes.x_name)


def integer_ticks(figure: go.Figure, shape: tuple[int, ...], axes: Axes) -> None:
    """A tick on every row or column of a small unlabelled axis, never between indices."""
    if axes.x_labels is None and shape[1] <= 12:
        figure.update_xaxes(dtick=1)
    if axes.y_labels is None and shape[0] <= 12:
        figure.update_yaxes(dtick=1)


def add_slider(figure: go.Figure, frames: list[Frame], prefix: str, traces: list[int]) -> None:
    """Plotly frames, one per slider position, each replacing the z (and a frame's own axis labels) of `traces`."""
    figure.frames = [
        go.Frame(
            name=frame.label,
            traces=traces,
            data=[
                go.Heatmap(z=matrix.astype(np.float32), x=escaped(frame.x_labels), y=escaped(frame.y_labels))
                for matrix in frame.matrices
            ],
        )
        for frame in frames
    ]
    still = dict(mode="immediate", frame=dict(duration=0, redraw=True), transition=dict(duration=0))
    steps = [dict(method="animate", label=plain(frame.label), args=[[frame.label], still]) for frame in frames]
    active = len(frames) - 1 if prefix == "step" else 0
    figure.update_layout(
        sliders=[dict(active=active, steps=steps, currentvalue=dict(prefix=f"{prefix} "), pad=dict(t=50), len=0.95)]
    )


def bars(
    values: dict[str, float | None] | dict[str, dict[str, float | None]],
    title: str,
    category_name: str,
    reference: float | None = None,
    reference_name: str = "clean loss",
    value_name: str = "loss",
) -> go.Figure:
    """Horizontal bars of each value minus `reference` (e.g. loss of each ablated head over the clean loss).

    Differences, not raw losses: ablation losses sit close to the clean loss, and bars from 0 would all look equal.
    `values` maps categories to values, or series names to such maps (grouped bars, one colour per series).
    """
    series = values if all(isinstance(value, dict) for value in values.values()) and values else {"": values}
    shift = reference if reference is not None and math.isfinite(reference) else 0.0
    axis = f"{value_name} minus {reference_name} ({shift:.4g})" if shift else value_name
    figure = go.Figure()
    for index, (name, by_category) in enumerate(series.items()):
        raw = [math.nan if value is None else value for value in by_category.values()]
        delta = [value - shift for value in raw]
        colours = PALETTE[index] if name else [PALETTE[1] if d > 0 else PALETTE[0] for d in delta]
        figure.add_trace(
            go.Bar(
                x=delta,
                y=[plain(category) for category in by_category],
                name=plain(name),
                orientation="h",
                customdata=raw,
                marker_color=colours,
                showlegend=bool(name),
                hovertemplate=f"%{{y}} {plain(name)}<br>{plain(value_name)} %{{customdata:.4g}}<br>"
                "difference %{x:+.4g}<extra></extra>",
            )
        )
    categories = max(len(by_category) for by_category in series.values())
    figure.update_yaxes(autorange="reversed", title=plain(category_name), automargin=True)
    layout(figure, title=title, height=140 + 20 * categories * len(series), width=720)
    figure.update_xaxes(title=plain(axis), zeroline=True, zerolinecolor="black", showgrid=True, gridcolor="#eee")
    figure.update_layout(barmode="group", legend=dict(orientation="h", x=0, y=1.02, yanchor="bottom", font_size=11))
    return figure


def colour(index: int) -> dict:
    """A line style distinct for up to 48 series, then varied by dash."""
    return dict(color=PALETTE[index % len(PALETTE)], dash=DASHES[index // len(PALETTE) % len(DASHES)])


def step_lines(
    series: dict[str, Series],
    title: str,
    value_name: str,
    loss: Series | None = None,
    threshold: float | None = None,
    log_y: bool = False,
) -> go.Figure:
    """A line per series against step; the probe loss on a right-hand axis; stars where a series reaches `threshold`."""
    figure = go.Figure()
    every_step = {step for steps, _ in series.values() for step in steps}
    for index, (name, (steps, values)) in enumerate(series.items()):
        figure.add_trace(
            go.Scatter(
                x=np.asarray(steps, np.int64),
                y=as_floats(values),
                name=plain(name),
                mode="lines+markers" if is_dense(steps, values, every_step) else "markers",
                line=colour(index),
                marker_size=4,
                legendgroup=plain(name),
                hovertemplate=f"{plain(name)}<br>step %{{x}}<br>{plain(value_name)} %{{y:.4g}}<extra></extra>",
            )
        )
        if threshold is not None:
            add_formation_star(figure, name, steps, values, threshold, colour(index)["color"])
    if threshold is not None:
        figure.add_hline(
            y=threshold,
            line_dash="dot",
            line_color="grey",
            annotation_text=f"threshold {threshold:g}",
            annotation_position="bottom right",
        )
    if loss is not None:
        add_probe_loss(figure, loss)
    step_layout(figure, [*series, *(["probe loss (right axis)"] if loss is not None else [])], title, len(series) > 8)
    values = [value for _, values in series.values() for value in values]
    finite = [value for value in values if value is not None and math.isfinite(value)]
    title = plain(value_name + spread_note(finite))
    figure.update_layout(yaxis=dict(title=title, showgrid=True, gridcolor="#eee", **value_axis(values, log=log_y)))
    return figure


def is_dense(steps: list[int], values: list[float | None], every_step: set[int]) -> bool:
    """A series with a finite value at every step of its figure (and three or more): a line; else only its points,
    so a costly score measured at the last two snapshots does not read as a trend."""
    measured = {step for step, value in zip(steps, values) if value is not None and math.isfinite(value)}
    return len(measured) >= 3 and measured >= every_step


def add_formation_star(figure: go.Figure, name: str, steps: list[int], values: list, threshold: float, color: str):
    """A star where the series first reaches `threshold` (lit_interp.formation); open when that is the first point."""
    formed = formation(steps, values, threshold)
    if formed is None:
        return
    figure.add_trace(
        go.Scatter(
            x=[formed.step],
            y=[values[steps.index(formed.step)]],
            mode="markers",
            showlegend=False,
            legendgroup=plain(name),
            marker=dict(
                # open: already there at the first snapshot, so formed at or before it
                symbol="star-open" if formed.at_first_snapshot else "star",
                size=13,
                color=color,
                line=dict(width=1, color="black"),
            ),
            hovertemplate=f"{plain(name)} reaches {threshold:g} at step {formed}<extra></extra>",
        )
    )


def add_probe_loss(figure: go.Figure, loss: Series) -> None:
    """The probe loss, dashed grey, on a right-hand axis of its own."""
    figure.add_trace(
        go.Scatter(
            x=np.asarray(loss[0], np.int64),
            y=as_floats(loss[1]),
            name="probe loss (right axis)",
            yaxis="y2",
            mode="lines",
            line=dict(color="grey", dash="dash"),
            hovertemplate="probe loss %{y:.4g}<br>step %{x}<extra></extra>",
        )
    )
    figure.update_layout(
        yaxis2=dict(title="probe loss", overlaying="y", side="right", showgrid=False, **value_axis(loss[1], log=True))
    )


def step_layout(figure: go.Figure, names: list[str], title: str, many: bool) -> None:
    """The legend below the plot in as many columns as its longest name allows: never over the lines, never
    scrolling (a right-hand legend of 26 hooks would scroll; one of 48 colours per head must be read in full)."""
    entry_width = 7 * max(len(name) for name in names) + 45
    width = 1100 if many else 540
    rows = -(-len(names) // max(1, (width - 80) // entry_width))
    legend = dict(orientation="h", x=0, y=-0.14 if many else -0.22, yanchor="top", entrywidth=entry_width)
    layout(figure, title=title, height=380 + 22 * rows, width=width)
    figure.update_layout(
        margin_b=60 + 22 * rows,
        xaxis=dict(title="step", showgrid=True, gridcolor="#eee"),
        legend=dict(font_size=10, **legend),
    )


def spread_note(values: list[float]) -> str:
    """' (all within 0.002)' when the values span under 1% of their size: an autoscaled axis would stretch that
    range over the whole plot and a flat line would read as a cliff."""
    if len(values) < 2:
        return ""
    spread, size = max(values) - min(values), max(abs(value) for value in values)
    return f" (all within {spread:.2g})" if 0 < spread < 0.01 * size else ""


def as_floats(values: list[float | None]) -> np.ndarray:
    """Values as a float32 array (None as NaN, a gap): plotly stores it as compact base64, not as decimal text."""
    return np.array([math.nan if value is None else value for value in values], np.float32)


def value_axis(values: list[float | None], log: bool) -> dict:
    """A log axis, a tick per decade, when asked for and the values are positive over a decade or more; else linear."""
    finite = [value for value in values if value is not None and math.isfinite(value)]
    if finite and min(finite) == max(finite) != 0:  # a constant (a fixed lr): plotly's default range reads as 0
        return dict(type="linear", range=[min(finite) - abs(min(finite)), min(finite) + abs(min(finite))])
    if not log or not finite or min(finite) <= 0:
        return dict(type="linear")
    if math.log10(max(finite)) - math.log10(min(finite)) < 1:
        return dict(type="linear")  # within one decade a log axis has no labelled tick worth reading
    return dict(type="log", exponentformat="power", dtick=1)


def layout(figure: go.Figure, title: str | None = None, height: int = 400, width: int | None = None) -> go.Figure:
    """Shared look: no plotly template (keeps every figure's JSON small), white background, light grid."""
    figure.update_layout(
        template="none",
        font=FONT,
        height=height,
        width=width,
        margin=dict(l=60, r=30, t=60 if title else 40, b=50),
        title=dict(text=plain(title), x=0.02) if title else None,
        plot_bgcolor="white",
        paper_bgcolor="white",
    )
    figure.update_xaxes(showgrid=False, zeroline=False, automargin=True)
    figure.update_yaxes(showgrid=False, zeroline=False, automargin=True)
    # Tiny scores as 4e-10, not plotly's SI "400p", which reads as a unit; log axes keep their powers.
    figure.for_each_xaxis(lambda axis: axis.update(exponentformat="e") if axis.type != "log" else None)
    figure.for_each_yaxis(lambda axis: axis.update(exponentformat="e") if axis.type != "log" else None)
    return figure


def empty_figure(title: str | None, reason: str | None = None) -> go.Figure:
    """A figure with no data and a note in its middle: all values NaN, and why when known."""
    figure = go.Figure()
    layout(figure, title=title, height=160, width=560)
    note = "all values NaN" + (f": {reason}" if reason else "")
    lines = "<br>".join(plain(line) for line in textwrap.wrap(note, 80))  # plotly does not wrap annotations
    figure.add_annotation(text=lines, x=0, y=0.5, xref="paper", yref="paper", showarrow=False, align="left")
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return figure


@dataclass
class Points:
    """One series of a points figure: x, y, and optionally a symmetric error bar per point."""

    x: list
    y: list[float]
    error: list[float] | None = None


def points(
    series: dict[str, Points],
    title: str,
    x_name: str,
    y_name: str,
    y_range: tuple[float, float] | None = None,
    lines: bool = False,
    log_y: bool = False,
    shaded: tuple[float, float] | None = None,
    mark_maximum: bool = False,
) -> go.Figure:
    """Markers (joined only when `lines`: a profile over positions, not a trend), error bars where given,
    a fixed y range where the values are shares, an x band shaded (e.g. the training range)."""
    finite = [v for one in series.values() for v in one.y if v is not None and math.isfinite(v)]
    if not finite:
        return empty_figure(title)
    figure = go.Figure()
    for index, (name, one) in enumerate(series.items()):
        error = None if one.error is None else dict(type="data", array=as_floats(one.error), visible=True)
        figure.add_trace(
            go.Scatter(
                x=one.x,
                y=as_floats(one.y),
                error_y=error,
                name=plain(name),
                mode="lines+markers" if lines else "markers",
                line=colour(index),
                marker_size=6,
                showlegend=len(series) > 1,
                hovertemplate=f"{plain(name)}<br>{plain(x_name)} %{{x}}<br>{plain(y_name)} %{{y:.4g}}<extra></extra>",
            )
        )
        if mark_maximum and any(math.isfinite(v) for v in one.y):
            add_maximum_star(figure, one, name, x_name, colour(index)["color"])
    if shaded is not None:
        figure.add_vrect(x0=shaded[0], x1=shaded[1], fillcolor="grey", opacity=0.12, line_width=0)
    layout(figure, title=title, height=380, width=720 if len(series) > 1 else 620)
    y_axis = dict(title=plain(y_name + spread_note(finite)), showgrid=True, gridcolor="#eee")
    y_axis |= dict(range=list(y_range)) if y_range is not None else value_axis(finite, log=log_y)
    figure.update_layout(
        xaxis=index_axis(x_name, {x for one in series.values() for x in one.x}),
        yaxis=y_axis,
        legend=dict(orientation="h", x=0, y=-0.22, yanchor="top", font_size=10),
    )
    return figure


def add_maximum_star(figure: go.Figure, one: Points, name: str, x_name: str, color: str) -> None:
    best = int(np.nanargmax(as_floats(one.y)))
    figure.add_trace(
        go.Scatter(
            x=[one.x[best]],
            y=[one.y[best]],
            mode="markers",
            marker=dict(symbol="star", size=12, color=color, line=dict(width=1)),
            showlegend=False,
            hovertemplate=f"{plain(name)} highest at {plain(x_name)} %{{x}}<extra></extra>",
        )
    )


def index_axis(x_name: str, xs: set) -> dict:
    """An x axis with a tick on every index when the x values are a few integers (positions, offsets, lengths)."""
    axis = dict(title=plain(x_name), showgrid=True, gridcolor="#eee")
    if all(isinstance(x, int) for x in xs) and len(xs) <= 16:
        axis["dtick"] = 1
    return axis


def identity_scatter(x: dict[str, float], y: dict[str, float], title: str, x_name: str, y_name: str) -> go.Figure:
    """One labelled point per key of both maps, with the line y = x: points off it moved."""
    keys = [key for key in x if key in y and math.isfinite(x[key]) and math.isfinite(y[key])]
    if not keys:
        return empty_figure(title)
    xs, ys = [x[key] for key in keys], [y[key] for key in keys]
    low, high = min(xs + ys), max(xs + ys)
    pad = (high - low) * 0.05 or 1.0
    figure = go.Figure(
        [
            go.Scatter(
                x=[low - pad, high + pad],
                y=[low - pad, high + pad],
                mode="lines",
                name="y = x",
                line=dict(color="grey", dash="dot"),
                hoverinfo="skip",
            ),
            go.Scatter(
                x=xs,
                y=ys,
                mode="markers+text",
                text=[plain(key) for key in keys],
                textposition="top center",
                name="",
                showlegend=False,
                marker=dict(color=PALETTE[0], size=8),
                hovertemplate=f"%{{text}}<br>{plain(x_name)} %{{x:.4g}}<br>{plain(y_name)} %{{y:.4g}}<extra></extra>",
            ),
        ]
    )
    layout(figure, title=title, height=460, width=520)
    figure.update_layout(
        xaxis=dict(title=plain(x_name), showgrid=True, gridcolor="#eee"),
        yaxis=dict(title=plain(y_name), showgrid=True, gridcolor="#eee", scaleanchor="x"),
        legend=dict(orientation="h", x=0, y=-0.2, yanchor="top"),
    )
    return figure
