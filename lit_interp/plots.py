"""Matplotlib figures of analysis results (off-screen, Agg) as base64 PNGs, and cheap heatmap images for TensorBoard."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# Figures are built with the object-oriented API (no pyplot), so no global backend or figure
# registry is touched inside a training process.


def attention_figure(patterns: torch.Tensor, layer: int) -> Figure:
    """One heatmap per head of a layer's mean pattern `[head query_pos key_pos]`."""
    n_heads = patterns.shape[0]
    columns = min(n_heads, 4)
    rows = -(-n_heads // columns)
    figure = Figure(figsize=(3 * columns, 3 * rows), layout="constrained")
    for head in range(n_heads):
        axes = figure.add_subplot(rows, columns, head + 1)
        image = axes.imshow(patterns[head].float().numpy(), cmap="Blues", vmin=0, vmax=1)
        axes.set_title(f"L{layer}H{head}")
        axes.set_xlabel("key_pos")
        axes.set_ylabel("query_pos")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    figure.colorbar(image, ax=figure.axes, shrink=0.8)
    return figure


def matrix_figure(matrix: torch.Tensor, title: str, xlabel: str = "", ylabel: str = "", labels: list[str] | None = None) -> Figure:
    """A heatmap of a 2-D tensor, symmetric colour scale around zero when it has both signs."""
    values = matrix.float().numpy()
    bound = float(np.abs(values).max()) or 1.0
    diverging = values.min() < 0
    figure = Figure(figsize=(4.5, 4), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap="RdBu_r" if diverging else "viridis", vmin=-bound if diverging else None, vmax=bound if diverging else None)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if labels is not None:
        axes.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        axes.set_yticks(range(len(labels)), labels, fontsize=7)
    figure.colorbar(image, ax=axes)
    return figure


def bar_figure(values: dict[str, float], title: str, reference: float | None = None, reference_label: str = "clean loss") -> Figure:
    """Horizontal bars (e.g. loss per ablated head or hook), with a dashed reference line."""
    names = list(values)
    figure = Figure(figsize=(6, 0.8 + 0.28 * len(names)), layout="constrained")
    axes = figure.add_subplot()
    axes.barh(range(len(names)), [values[name] for name in names], color="tab:blue")
    axes.set_yticks(range(len(names)), names, fontsize=7)
    axes.invert_yaxis()
    if reference is not None:
        axes.axvline(reference, color="black", linestyle="--", label=reference_label)
        axes.legend(fontsize=7)
    axes.set_title(title)
    return figure


def lines_figure(steps: list[int], series: dict[str, list[float]], title: str, ylabel: str = "", log_y: bool = False) -> Figure:
    """One line per series against training step (a series may hold NaN where a value is absent)."""
    figure = Figure(figsize=(6, 3.5), layout="constrained")
    axes = figure.add_subplot()
    for name, values in series.items():
        axes.plot(steps, values, marker="o", markersize=3, label=name)
    if log_y:
        axes.set_yscale("log")
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    if 1 < len(series) <= 24:
        axes.legend(fontsize=7, ncol=max(1, len(series) // 8))
    return figure


def heatmap_rgb(matrices: list[torch.Tensor], min_pixels: int = 160) -> np.ndarray:
    """Matrices side by side as one `[height width 3]` uint8 heatmap image, each scaled up to >= min_pixels.

    Colour-mapped with numpy, no figure drawn: ~1000x cheaper than a matplotlib figure, which
    matters in a training loop (a figure costs ~0.3 s on CPU). Diverging colours when a matrix has
    both signs, else 'Blues' from 0 to its maximum (1 for attention patterns).
    """
    from matplotlib import colormaps

    tiles = []
    for matrix in matrices:
        values = matrix.float().numpy()
        bound = float(np.abs(values).max()) or 1.0
        if values.min() < 0:
            rgb = colormaps["RdBu_r"]((values / bound + 1) / 2)
        else:
            rgb = colormaps["Blues"](values / max(bound, 1.0))  # patterns keep their 0..1 scale
        scale = max(1, -(-min_pixels // max(values.shape)))
        tiles.append(np.kron(rgb[..., :3], np.ones((scale, scale, 1))))
        tiles.append(np.ones((tiles[-1].shape[0], 4, 3)))  # white gap between heads
    height = max(tile.shape[0] for tile in tiles)
    tiles = [np.pad(tile, ((0, height - tile.shape[0]), (0, 0), (0, 0)), constant_values=1) for tile in tiles[:-1]]
    return (np.concatenate(tiles, axis=1) * 255).astype(np.uint8)


def to_base64_png(figure: Figure) -> str:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
