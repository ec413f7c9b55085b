"""Report sections for the logit lens, activation patching and direct attribution per component."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from lit_interp.heads import layer_label
from lit_interp.report.figures import PALETTE, Axes, Frame, bars, data_scale, heatmap_grid, layout
from lit_interp.report.html import Section, embed, number, table

# Summary keys these sections draw, so the generic tables do not repeat them.
HANDLED = {"patching", "logit_difference_patching", "direct_attribution"}


def logit_lens_section(summary: dict[str, Any]) -> Section | None:
    """Loss (and accuracy) read off the residual stream entering each block, the last entry being the model's output."""
    layers = summary.get("layers", {})
    rows = [layers[key] for key in sorted(layers, key=lambda key: int(key) if str(key).isdigit() else 0)]
    names = [
        name for name in ("logit_lens_loss", "logit_lens_acc", "logit_lens_r2") if any(name in row for row in rows)
    ]
    if not names:
        return None
    positions = [f"block {index}" if index < len(rows) - 1 else "output" for index in range(len(rows))]
    figure = go.Figure()
    for index, name in enumerate(names):
        values = [row.get(name) for row in rows]
        figure.add_trace(
            go.Scatter(
                x=positions,
                y=values,
                name=name.removeprefix("logit_lens_"),
                mode="lines+markers",
                yaxis="y2" if index else "y",
                line=dict(color=PALETTE[index]),
                hovertemplate=f"%{{x}}<br>{name} %{{y:.4g}}<extra></extra>",
            )
        )
    layout(figure, title="Logit lens", height=380, width=620)
    figure.update_layout(
        xaxis=dict(title="residual stream read (entering block l, or the final output)"),
        yaxis=dict(title="loss", showgrid=True, gridcolor="#eee"),
        legend=dict(orientation="h", x=0, y=-0.3, yanchor="top"),
    )
    if len(names) > 1:
        secondary = names[1].removeprefix("logit_lens_")
        figure.update_layout(
            yaxis2=dict(title=secondary, overlaying="y", side="right", range=[0, 1.02], dtick=0.2), margin_r=70
        )
    note = "What the unembedding reads from the residual stream entering each block: where the answer becomes readable."
    return Section("Logit lens", [embed(figure)], note)


# metric -> (summary section, [layer pos] tensor, [layer head] tensor, what the scores restore)
PATCHING = {
    "loss": ("patching", "resid_pre_patching", "head_patching", "restored share"),
    "logit difference": (
        "logit_difference_patching",
        "resid_pre_patching_logit_difference",
        "head_patching_logit_difference",
        "restored share",
    ),
}
PATCHING_NOTES = {"reason", "loss_gap", "loss_noise"}  # shown as text, not as losses in the table


def patching_section(summary: dict[str, Any], arrays: dict[str, np.ndarray], used: set[str]) -> Section | None:
    """Share of the clean metric restored by patching one clean activation into the corrupted run: by loss and by
    logit difference side by side; when the corruption's effect is within the noise, the reason instead."""
    items: list = []
    notes = []
    for metric, (section_name, residual_name, heads_name, value_name) in PATCHING.items():
        section = summary.get(section_name)
        section = section if isinstance(section, dict) else {}
        reason = section.get("reason")
        residual, heads = arrays.get(residual_name), arrays.get(heads_name)
        if residual is not None and residual.ndim == 2:
            used.add(residual_name)
            axes = Axes(
                "pos", "layer", y_labels=[layer_label(layer) for layer in range(residual.shape[0])], square=False
            )
            title = residual_name
            scale = data_scale([residual], value_name)
            figure = heatmap_grid([Frame("", [residual])], [""], scale, axes, title=title, reason=reason)
            if figure.data:  # an all-NaN grid is a short note
                figure.update_layout(
                    height=max(280, 160 + 40 * residual.shape[0]),
                    width=min(1100, max(420, 220 + 14 * residual.shape[1])),
                )
            items.append(embed(figure, "side-by-side"))
        if heads is not None and heads.ndim == 2:
            used.add(heads_name)
            axes = Axes(
                "head",
                "layer",
                [f"H{head}" for head in range(heads.shape[1])],
                [layer_label(layer) for layer in range(heads.shape[0])],
            )
            title = heads_name
            scale = data_scale([heads], value_name)
            figure = heatmap_grid([Frame("", [heads])], [""], scale, axes, title=title, reason=reason)
            if figure.data:
                figure.update_layout(height=max(280, 160 + 40 * heads.shape[0]))
            items.append(embed(figure, "side-by-side"))
        values = {name: value for name, value in section.items() if name not in PATCHING_NOTES}
        if values:
            items.append(table({name: {metric: value} for name, value in values.items()}, section_name))
        if "loss_gap" in section:
            gap, noise = (number(section.get(key)) for key in ("loss_gap", "loss_noise"))
            notes.append(
                f"By {metric}: corrupted minus clean (loss_gap) {gap}, the clean loss's noise "
                f"between the two halves of the probe batch (loss_noise) {noise}."
            )
        if reason:
            notes.append(f"Every {metric} patching score is NaN ({section_name}.reason): {reason}.")
    if not items and not notes:
        return None
    note = (
        "The last position's answer changed by corrupting its source; 1: patching this clean activation restores "
        "the clean metric, 0: no effect. The *_patching grids score one position's resid_pre, the "
        "head grids one head's hook_z; first by loss, then by logit difference (token tasks). " + " ".join(notes)
    )
    return Section("Activation patching", items, note)


def component_attribution_section(summary: dict[str, Any]) -> Section | None:
    """Every component's direct effect on the correct output: embeddings, each head, each MLP, the attention biases."""
    components: dict[str, float | None] = {}
    other = summary.get("direct_attribution")
    if isinstance(other, dict):
        components |= {name: other[name] for name in ("embed", "pos_embed") if name in other}
    components |= {
        head: scores["direct_attribution"]
        for head, scores in summary.get("heads", {}).items()
        if "direct_attribution" in scores
    }
    components |= {
        f"mlp{layer}": row["mlp_direct_attribution"]
        for layer, row in summary.get("layers", {}).items()
        if "mlp_direct_attribution" in row
    }
    if isinstance(other, dict) and "attn_bias" in other:
        components["attn_bias"] = other["attn_bias"]
    if not components:
        return None
    figure = bars(components, "Direct attribution per component", "component", value_name="direct attribution")
    note = "Each component's output projected on the correct direction through the final norm, averaged over targets."
    return Section("Direct attribution per component", [embed(figure)], note)
