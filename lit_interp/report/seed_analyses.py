"""Checkpoint-report sections for the seeds' hand analyses: single examples, weight edits, probes, logit difference."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import plotly.graph_objects as go

from lit_interp.heads import layer_label, parse_head_label
from lit_interp.report import descriptions
from lit_interp.report.figures import (
    PALETTE,
    Axes,
    Frame,
    Points,
    attention_scale,
    bars,
    heatmap_grid,
    identity_scatter,
    layout,
    points,
)
from lit_interp.report.html import Section, Table, embed, plain, table
from lit_interp.report.tensor_figures import tensor_figure

MAX_TABLE_EXAMPLES = 4
ABLATED = re.compile(r"attention_patterns_layer_(?P<layer>\d+)_mean_ablated")


def scalars(section: dict[str, Any], name: str) -> Table:
    """Summary section `name`'s numbers and texts as key | value rows."""
    rows = {key: {"value": value} for key, value in section.items() if not isinstance(value, (dict, list))}
    return table(rows, name)


def layer_rows(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    layers = summary.get("layers", {})
    return {f"layer {key}": layers[key] for key in sorted(layers, key=lambda key: int(key) if key.isdigit() else 0)}


def layer_section(summary: dict[str, Any]) -> Section | None:
    if not summary.get("layers"):
        return None
    note = "Every per-layer score (the last row: the residual stream after the last block, where a score reads it)."
    return Section("Layers", [table(layer_rows(summary), "layer", descriptions.LAYERS)], note)


def probes_section(summary: dict[str, Any]) -> Section | None:
    """Each layer's probe R² beside the same probe fitted to shuffled targets (what chance gives)."""
    columns = ("probe_c_r2", "probe_c_shuffled_r2", "probe_d_r2", "probe_d_shuffled_r2")
    rows = {
        layer: {column: row[column] for column in columns if column in row}
        for layer, row in layer_rows(summary).items()
        if any(column in row for column in columns)
    }
    probes = summary.get("probes")
    if not rows and not isinstance(probes, dict):
        return None
    items: list = []
    if rows:
        items.append(table(rows, "layer", descriptions.LAYERS))
    note = "Ridge probes for the recurrence's c and d from the last position's residual stream; an R² near its "
    note += "shuffled baseline is what a probe reads from nothing."
    if isinstance(probes, dict):
        items.append(scalars(probes, "probes"))
        if probes.get("reason"):
            note = f"Every probe R² is NaN: {probes['reason']}"
    return Section("Recurrence probes", items, note)


def top_k_section(arrays: dict[str, np.ndarray], used: set[str]) -> Section | None:
    """Per example: each position's input, its target's rank among the predictions and the top-k tokens."""
    tokens, probs = arrays.get("example_top_k_tokens"), arrays.get("example_top_k_probs")
    if tokens is None or probs is None or tokens.ndim != 3:
        return None
    used.update({"example_top_k_tokens", "example_top_k_probs", "example_target_rank"})
    inputs, ranks = arrays.get("example_inputs"), arrays.get("example_target_rank")
    items: list = []
    for example in range(min(MAX_TABLE_EXAMPLES, tokens.shape[0])):
        rows = {}
        for pos in range(tokens.shape[1]):
            row: dict[str, Any] = {}
            if inputs is not None and inputs.shape[1] == tokens.shape[1]:
                row["input"] = int(inputs[example, pos])
            if ranks is not None:
                row["target rank"] = int(ranks[example, pos]) if math.isfinite(ranks[example, pos]) else None
            row |= {
                f"top {k + 1}": f"{int(tokens[example, pos, k])}: {probs[example, pos, k]:.3f}"
                for k in range(tokens.shape[2])
            }
            rows[str(pos)] = row
        items.append(table(rows, f"example {example}: pos"))
    note = (
        "From example_inputs, example_top_k_tokens, example_top_k_probs and example_target_rank: each position's "
        "likeliest next "
        "tokens as token: probability, and the rank of its target (0: top; blank before the first target)."
    )
    return Section("Top-k predictions", items, note)


def predictions_section(arrays: dict[str, np.ndarray], used: set[str]) -> Section | None:
    """Vector tasks: each predicted coordinate against its target, one colour per example, on the line y = x."""
    predicted, target = arrays.get("example_predictions"), arrays.get("example_targets")
    if predicted is None or target is None or predicted.shape != target.shape or predicted.ndim != 3:
        return None
    used.update({"example_predictions", "example_targets"})
    figure = go.Figure()
    low, high = float(np.nanmin([predicted, target])), float(np.nanmax([predicted, target]))
    figure.add_trace(
        go.Scatter(x=[low, high], y=[low, high], mode="lines", name="y = x", line=dict(color="grey", dash="dot"))
    )
    for example in range(min(8, predicted.shape[0])):
        positions = np.repeat(np.arange(predicted.shape[1]), predicted.shape[2])
        figure.add_trace(
            go.Scatter(
                x=target[example].ravel(),
                y=predicted[example].ravel(),
                customdata=positions,
                mode="markers",
                name=f"example {example}",
                marker=dict(color=PALETTE[example], size=5),
                hovertemplate="target_pos %{customdata}<br>target %{x:.4g}<br>prediction %{y:.4g}<extra></extra>",
            )
        )
    layout(figure, title="example_predictions against example_targets", height=480, width=560)
    figure.update_layout(
        xaxis=dict(title="target (every target_pos and d_vocab)", showgrid=True, gridcolor="#eee"),
        yaxis=dict(title="prediction", showgrid=True, gridcolor="#eee", scaleanchor="x"),
    )
    note = "Every coordinate of every next vector of the first probe sequences: on the dotted line, predicted exactly."
    return Section("Predictions of single examples", [embed(figure)], note)


def loss_curve_sections(summary: dict[str, Any], arrays: dict[str, np.ndarray], used: set[str]) -> list[Section]:
    """Loss at other sequence lengths and over signed c, with standard errors, the training range of c shaded."""
    sections = []
    if {"seq_len", "loss_by_seq_len"} <= set(arrays):
        used.update({"seq_len", "loss_by_seq_len", "loss_by_seq_len_standard_error"})
        errors = arrays.get("loss_by_seq_len_standard_error")
        series = {
            "loss": Points(
                arrays["seq_len"].astype(int).tolist(),
                arrays["loss_by_seq_len"].tolist(),
                None if errors is None else errors.tolist(),
            )
        }
        figure = points(series, "loss_by_seq_len (error bars: loss_by_seq_len_standard_error)", "seq_len", "loss")
        items = [embed(figure)]
        if isinstance(summary.get("loss_by_seq_len"), dict):
            items.append(scalars(summary["loss_by_seq_len"], "loss_by_seq_len"))
        sections.append(Section("Loss at other sequence lengths", items, "MSE on fresh sequences of each length."))
    if {"c_grid", "loss_by_c"} <= set(arrays):
        used.update({"c_grid", "loss_by_c", "loss_by_c_standard_error"})
        errors = arrays.get("loss_by_c_standard_error")
        bounds = summary.get("loss_by_c")
        bounds = bounds if isinstance(bounds, dict) else {}
        low, high = bounds.get("training_c_low"), bounds.get("training_c_high")
        shaded = (low, high) if is_finite(low) and is_finite(high) else None
        series = {
            "loss": Points(
                arrays["c_grid"].tolist(), arrays["loss_by_c"].tolist(), None if errors is None else errors.tolist()
            )
        }
        figure = points(
            series,
            "loss_by_c against c_grid (error bars: loss_by_c_standard_error)",
            "c",
            "loss",
            shaded=shaded,
            log_y=True,
        )
        note = "MSE of sequences generated with each signed c; shaded: the training range of c."
        items = [embed(figure)] + ([scalars(bounds, "loss_by_c")] if bounds else [])
        sections.append(Section("Loss against c, inside and outside the training range", items, note))
    return sections


def ablated_attention_section(
    summary: dict[str, Any], arrays: dict[str, np.ndarray], labels: list[str], used: set[str]
) -> Section | None:
    """The mean patterns with an earlier layer mean-ablated, beside the clean ones; loss in each title."""
    losses = summary.get("attention_under_ablation")
    losses = losses if isinstance(losses, dict) else {}
    items: list = []
    for name in sorted(arrays):
        match = ABLATED.fullmatch(name)
        if not match:
            continue
        loss = losses.get(f"layer_{match['layer']}_mean_ablated_loss")
        title = f"{name}: loss {loss:.4g}" if is_finite(loss) else name
        if "attention_patterns" in arrays:
            clean = tensor_figure("attention_patterns", arrays["attention_patterns"], labels)
            clean.update_layout(
                title_text=plain(f"attention_patterns (clean): loss {summary.get('loss', math.nan):.4g}")
            )
            items.append(embed(clean, "side-by-side"))
        ablated = tensor_figure(name, arrays[name], labels)
        items.append(embed(ablated.update_layout(title_text=plain(title)), "side-by-side"))
        used.add(name)
        example = f"example_{name}"
        if example in arrays:
            items.append(embed(tensor_figure(example, arrays[example], labels)))
            used.add(example)
    if not items:
        return None
    if losses:
        items.append(scalars(losses, "attention_under_ablation"))
    note = "Every layer but the last with its hook_z replaced by the batch mean: how the later heads' attention moves."
    return Section("Attention under an ablation", items, note)


def sign_of_c_section(arrays: dict[str, np.ndarray], labels: list[str], used: set[str]) -> Section | None:
    names = [name for name in ("attention_patterns_negative_c", "attention_patterns_positive_c") if name in arrays]
    if not names:
        return None
    used.update(names)
    items = [embed(tensor_figure(name, arrays[name], labels), "side-by-side") for name in names]
    note = "Mean patterns of the probe sequences with c < 0 and with c > 0; colour fixed to [0, 1]."
    return Section("Attention by the sign of c", items, note)


def logit_difference_section(summary: dict[str, Any]) -> Section | None:
    """Each head's share of the clean logit difference, largest first (seed 003's plot)."""
    shares = {
        head: scores["logit_difference_share"]
        for head, scores in summary.get("heads", {}).items()
        if is_finite(scores.get("logit_difference_share"))
    }
    section = summary.get("logit_difference")
    if not shares and not isinstance(section, dict):
        return None
    items: list = []
    caption = ""
    if isinstance(section, dict):
        if is_finite(section.get("share_above_threshold")) and is_finite(section.get("threshold")):
            caption = (
                f" Heads with a share of at least {section['threshold']:g}: "
                f"{section.get('n_heads_above_threshold')} summing to {section['share_above_threshold']:.3g}."
            )
        if section.get("reason"):
            caption = f" Shares are NaN: {section['reason']}"
    if shares:
        ordered = dict(sorted(shares.items(), key=lambda item: -item[1]))
        figure = bars(ordered, "logit_difference_share per head, largest first", "head", value_name="share")
        items.append(embed(figure))
    if isinstance(section, dict):
        items.append(scalars(section, "logit_difference"))
    note = "Each head's direct effect on correct minus best incorrect logit, over the clean logit difference." + caption
    return Section("Logit difference per head", items, note)


def backup_section(summary: dict[str, Any]) -> Section | None:
    """With the top logit-difference head zeroed: each head's attribution then against before, on y = x."""
    heads = summary.get("heads", {})
    keys = ("logit_difference_attribution", "backup_logit_difference_change")
    measured = {head: scores for head, scores in heads.items() if all(is_finite(scores.get(key)) for key in keys)}
    clean = {head: scores[keys[0]] for head, scores in measured.items()}
    ablated = {head: scores[keys[0]] + scores[keys[1]] for head, scores in measured.items()}
    section = summary.get("backup_logit_difference")
    if not clean and not isinstance(section, dict):
        return None
    items: list = []
    if clean:
        title = "Backup heads: logit-difference attribution, top head ablated against clean"
        items.append(
            embed(identity_scatter(clean, ablated, title, "clean attribution", "attribution, top head ablated"))
        )
    if isinstance(section, dict):
        items.append(scalars(section, "backup_logit_difference"))
    note = (
        "Above the line y = x: a head that writes more of the logit difference once the top head is gone (a backup "
        "head); the ablated head itself falls to 0. naive_prediction: the clean logit difference less the ablated "
        "head's attribution."
    )
    return Section("Backup heads by logit difference", items, note)


def weight_edit_section(summary: dict[str, Any]) -> Section | None:
    """Seed 002's weight edits: one head kept alone in its layer, a QK replaced by a low-rank identity."""
    heads = summary.get("heads", {})
    values: dict[str, dict[str, float | None]] = {}
    for key, name in (("kept_alone_loss", "other heads of the layer zeroed"), ("qk_identity_loss", "QK identity")):
        by_head = {head: scores[key] for head, scores in heads.items() if key in scores}
        if by_head:
            values[f"{name} ({key})"] = by_head
    by_layer = {
        f"layer {layer}": row["layer_qk_identity_loss"]
        for layer, row in summary.get("layers", {}).items()
        if "layer_qk_identity_loss" in row
    }
    if not values and not by_layer:
        return None
    items = []
    clean = summary.get("loss")
    if values:
        items.append(embed(bars(values, "Probe loss after a weight edit of one head", "head", clean)))
    if by_layer:
        title = "Probe loss with every head of a layer given a QK identity (layer_qk_identity_loss)"
        items.append(embed(bars(by_layer, title, "layer", clean)))
    note = "Differences from the clean probe loss: a positive bar, the edit hurts."
    return Section("Weight edits", items, note)


def is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def large_entry_section(summary: dict[str, Any]) -> Section | None:
    """Seed 002's share of |W_OV| entries above 0.05 as a [layer head] grid, on [0, 1]."""
    heads = {parse_head_label(head): scores for head, scores in summary.get("heads", {}).items()}
    heads.pop(None, None)
    key = "ov_large_entry_fraction"
    by_head = {at: scores[key] for at, scores in heads.items() if is_finite(scores.get(key))}
    if not by_head:
        return None
    grid = np.full([max(at[axis] for at in heads) + 1 for axis in (0, 1)], np.nan, np.float32)
    for (layer, head), value in by_head.items():
        grid[layer, head] = value
    rows = [layer_label(layer) for layer in range(grid.shape[0])]
    axes = Axes("head", "layer", [f"H{head}" for head in range(grid.shape[1])], rows)
    figure = heatmap_grid([Frame("", [grid])], [""], attention_scale("share"), axes, title="ov_large_entry_fraction")
    note = "Fraction of each head's d_model x d_model W_OV entries larger than 0.05 in absolute value (seed 002)."
    return Section("Large W_OV entries", [embed(figure.update_layout(height=max(280, 160 + 40 * grid.shape[0])))], note)
