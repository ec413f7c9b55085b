"""Every snapshot tensor's dimension names (the shapes docs/analysis.md lists) and the figure drawn from them."""

from __future__ import annotations

import re

import numpy as np
import plotly.graph_objects as go

from lit_interp.heads import head_labels, layer_label
from lit_interp.report.figures import (
    Axes,
    Frame,
    Points,
    attention_scale,
    data_scale,
    empty_figure,
    heatmap_grid,
    points,
    shrink,
)

HEATMAP_MAX_SIDE = 256  # larger matrices are shown as block means
MAX_EXAMPLES = 16

# tensor name (full match) -> its dimensions, outermost first
DIMS: list[tuple[re.Pattern, tuple[str, ...]]] = [
    (re.compile(pattern), dims)
    for pattern, dims in [
        (
            r"attention_patterns(_.+)?|attention_scores|repeated_sequence_patterns|adversarial_attention_patterns_.+",
            ("layer", "head", "query_pos", "key_pos"),
        ),
        (r"example_attention_patterns(_.+)?", ("example", "layer", "head", "query_pos", "key_pos")),
        (r"example_inputs", ("example", "pos")),
        (r"head_.+|backup_attribution_change|backup_logit_difference_change", ("layer", "head")),
        (r"direct_attribution_by_position", ("layer", "head", "target_pos")),
        (r"component_direct_attribution", ("component", "target_pos")),
        (r"(ov|qk)_singular_values", ("layer", "head", "d_head")),
        (r"neuron_firing_frequency", ("layer", "d_mlp")),
        (
            r"neuron_(firing_frequency|mean_activation)_by_position|example_neuron_activations",
            ("layer", "pos", "d_mlp"),
        ),
        (r"resid_pre_patching(_logit_difference)?", ("layer", "pos")),
        (r"embed_fourier_norms|neuron_logit_fourier_norms", ("p",)),
        (r"neuron_fourier_norms", ("p", "p")),
        (r"neuron_frequency(_fraction)?", ("d_mlp",)),
        (r"logit_sum_coefficients", ("p-1", "c")),
        (r"logit_mean", ("c",)),
        (r"train_logits", ("n_train", "c")),
        (r"train_pairs", ("n_train",)),
        (r"example_top_k_(tokens|probs)", ("example", "pos", "k")),
        (r"example_target_rank", ("example", "pos")),
        (r"example_(predictions|targets)", ("example", "target_pos", "d_vocab")),
        (r"bos_attention_by_query_pos", ("layer", "head", "query_pos")),
        (r"attention_by_key_position", ("layer", "head", "key_pos")),
        (r"rotary_qk_offset_scores", ("layer", "head", "offset")),
        (r"c_grid|loss_by_c(_standard_error)?", ("c",)),
        (r"seq_len|loss_by_seq_len(_standard_error)?", ("length",)),
    ]
]
# Tensors whose values are shares of attention or probabilities: drawn on [0, 1], never stretched.
SHARES = re.compile(r".*(pattern|attention).*|example_top_k_probs")


def tensor_dims(name: str, ndim: int) -> tuple[str, ...]:
    """The tensor's dimension names; `dim0`, `dim1`, ... for a tensor the table does not know (a user's)."""
    for pattern, dims in DIMS:
        if pattern.fullmatch(name) and len(dims) == ndim:
            return dims
    return tuple(f"dim{index}" for index in range(ndim))


def is_share(name: str, arrays: list[np.ndarray]) -> bool:
    finite = [a[np.isfinite(a)] for a in arrays]
    return bool(SHARES.fullmatch(name)) and all(a.size == 0 or (a.min() >= 0 and a.max() <= 1) for a in finite)


def head_titles(array: np.ndarray, labels: list[str]) -> list[str]:
    """`L{layer}H{head}` for a `[layer head ...]` tensor (the summary's labels when they match)."""
    n_layers, n_heads = array.shape[:2]
    return labels if len(labels) == n_layers * n_heads else head_labels(n_layers, n_heads)


def scale_for(name: str, matrices: list[np.ndarray]):
    return attention_scale() if is_share(name, matrices) else data_scale(matrices, "value")


def tensor_figure(
    name: str, array: np.ndarray, labels: list[str], row_labels: list[str] | None = None, reason: str | None = None
) -> go.Figure:
    """The figure its dimensions call for, titled with the tensor's name and with axes named by its dimensions.

    [layer head a b]: a heatmap per head; [example layer head a b]: the same with an example slider;
    [layer head x]: a line per head over x; [layer a b]: a heatmap per layer; 2-D: one heatmap; 1-D: points.
    """
    dims = tensor_dims(name, array.ndim)
    if not np.isfinite(array).any():
        return empty_figure(name, reason)
    if array.ndim == 5 and dims[1:3] == ("layer", "head"):
        frames = [Frame(str(index), [m for layer in example for m in layer]) for index, example in enumerate(array)]
        frames = frames[:MAX_EXAMPLES]
        scale = scale_for(name, [m for frame in frames for m in frame.matrices])
        return heatmap_grid(
            frames, head_titles(array[0], labels), scale, Axes(dims[4], dims[3]), slider_prefix=dims[0], title=name
        )
    if array.ndim == 4 and dims[:2] == ("layer", "head"):
        matrices = [shrink(m, HEATMAP_MAX_SIDE)[0] for layer in array for m in layer]
        axes = Axes(dims[3], dims[2])
        return heatmap_grid(
            [Frame("", matrices)], head_titles(array, labels), scale_for(name, matrices), axes, title=name
        )
    if array.ndim == 3 and dims[:2] == ("layer", "head"):
        series = {
            title: Points(list(range(array.shape[2])), row.tolist())
            for title, row in zip(head_titles(array, labels), array.reshape(-1, array.shape[2]), strict=True)
        }
        share = is_share(name, [array])
        return points(
            series,
            name,
            dims[2],
            "attention" if share else "value",
            (0, 1) if share else None,
            lines=True,
            mark_maximum="offset" in dims,
        )
    if array.ndim == 3:
        matrices = [shrink(m, HEATMAP_MAX_SIDE)[0] for m in array]
        titles = [f"{dims[0]} {index}" if dims[0] != "layer" else layer_label(index) for index in range(len(array))]
        axes = Axes(dims[2], dims[1], square=False)
        return heatmap_grid([Frame("", matrices)], titles, scale_for(name, matrices), axes, columns=2, title=name)
    if array.ndim == 2:
        matrix, block = shrink(array, HEATMAP_MAX_SIDE)
        x_labels = [f"H{head}" for head in range(array.shape[1])] if dims == ("layer", "head") else None
        y_labels = [layer_label(layer) for layer in range(array.shape[0])] if dims[0] == "layer" else row_labels
        if block > 1 or (y_labels is not None and len(y_labels) != matrix.shape[0]):
            y_labels = None
        axes = Axes(dims[1], dims[0], x_labels, y_labels, square=False)
        figure = heatmap_grid([Frame("", [matrix])], [""], scale_for(name, [matrix]), axes, title=name)
        if matrix.shape[0] <= 30:  # a few rows (layers, components): short cells, not a square
            figure.update_layout(height=max(280, 160 + 24 * matrix.shape[0]))
        return figure
    return points({name: Points(list(range(array.shape[0])), array.tolist())}, name, dims[0], "value")
