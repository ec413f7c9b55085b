"""The checkpoint report: one analysis (summary dict + tensors, as `run_analysis` returns them) as one page."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from lit_interp.heads import PER_HEAD_TENSOR
from lit_interp.report import descriptions, seed_analyses
from lit_interp.report.analyses import HANDLED, component_attribution_section, logit_lens_section, patching_section
from lit_interp.report.figures import (
    Axes,
    Frame,
    attention_scale,
    bars,
    block_labels,
    cosine_scale,
    data_scale,
    heatmap_grid,
    shrink,
)
from lit_interp.report.html import Preformatted, Section, embed, render, table
from lit_interp.report.tensor_figures import HEATMAP_MAX_SIDE, MAX_EXAMPLES, head_titles, tensor_dims, tensor_figure

if TYPE_CHECKING:  # torch is only needed by the caller: `analyze --run` never imports it
    import torch

SUMMARY_KEYS = {
    "step",
    "task",
    "loss",
    "metrics",
    "heads",
    "hooks",
    "composition",
    "adversarial",
    "term_importance",
    "checkpoint",
    "layers",
    "probes",
    "logit_difference",
    "backup_logit_difference",
    "loss_by_c",
    "loss_by_seq_len",
    "attention_under_ablation",
}

# family of per-head tensors -> (heading, note, column name, row name, value name)
FAMILIES = {
    "ov_circuit": (
        "Full OV circuits W_E W_OV W_U",
        "Row s: what the head adds to the output logits when it attends only to "
        "input s. A bright diagonal is a copying head.",
        "output",
        "source",
        "logit",
    ),
    "rotary_similarity": (
        "Cosine similarity across positions",
        "Of the head's queries and keys before (q, k) and after "
        "(rot_q, rot_k) the rotary embedding, and of q against k.",
        "pos",
        "pos",
        "cosine similarity",
    ),
    "attn_score_terms": (
        "Attention-score terms",
        "The last layer's mean attention scores split into the term reading "
        "the embeddings directly and the K-, Q- and K+Q-composition terms.",
        "key_pos",
        "query_pos",
        "score",
    ),
    "qk_circuit": (
        "Full QK circuits W_E W_QK W_E^T",
        "Entry (q, k): the attention score a query token q gives a key token k through the embeddings alone.",
        "key token",
        "query token",
        "score",
    ),
    "positional_qk_circuit": (
        "Positional QK circuits W_pos W_QK W_pos^T",
        "Entry (q, k): the attention score from query position q to key position k through the positional embeddings.",
        "key_pos",
        "query_pos",
        "score",
    ),
    "kq_composition_circuit": (
        "K+Q-composition circuits",
        "The score a later head's query gives a key whose residual stream carries an earlier head's output "
        "(named _from_<writer>, one figure per writer).",
        "key token",
        "query token",
        "score",
    ),
    "ov_neuron_circuit": (
        "OV circuits into the same layer's neurons W_E W_OV W_in",
        "Row: the input token the head attends to; column: the neuron of the same layer's MLP it drives.",
        "d_mlp",
        "d_vocab",
        "pre-activation",
    ),
    "ov_matrix": (
        "W_OV in d_model space",
        "Each head's processed W_OV: rows the d_model input direction, columns the d_model output; centred on 0.",
        "d_model (output)",
        "d_model (input)",
        "weight",
    ),
    "qk_matrix": (
        "W_QK in d_model space",
        "Each head's processed W_QK: rows the query's d_model direction, columns the key's; centred on 0.",
        "d_model (key)",
        "d_model (query)",
        "weight",
    ),
}
# family -> the head score read off its matrices, shown in each head's subplot title
TITLE_SCORES = {
    "ov_circuit": "ov_eigen_score",
    "qk_circuit": "qk_diagonal_contrast",
    "ov_matrix": "ov_large_entry_fraction",
    "qk_matrix": "qk_eigen_score",
}
PATTERNS = {
    "attention_patterns": (
        "Mean attention patterns on the probe batch",
        "Each head's attention from query_pos (rows) to key_pos "
        "(columns), averaged over the probe batch; colour fixed to [0, 1].",
    ),
    "repeated_sequence_patterns": (
        "Mean attention patterns on a sequence repeated twice",
        "The probe batch's first half "
        "repeated: an induction head attends from the second copy to the token after the first.",
    ),
}


def checkpoint_report(summary: dict[str, Any], tensors: dict[str, torch.Tensor], title: str) -> str:
    """The page: head table, attention (mean, per example), circuits, ablations, attribution, patching, the rest."""
    arrays = {name: tensor.detach().float().cpu().numpy() for name, tensor in tensors.items()}
    labels = list(summary.get("heads", {}))
    used: set[str] = {"example_inputs"}
    sections = [
        head_table(summary, arrays, used),
        seed_analyses.layer_section(summary),
        *pattern_sections(arrays, labels, used),
        example_section(arrays, labels, used),
        seed_analyses.top_k_section(arrays, used),
        seed_analyses.predictions_section(arrays, used),
        seed_analyses.ablated_attention_section(summary, arrays, labels, used),
        seed_analyses.sign_of_c_section(arrays, labels, used),
        *per_head_sections(arrays, used, token_task(summary), summary),
        seed_analyses.large_entry_section(summary),
        *ablation_sections(summary),
        seed_analyses.weight_edit_section(summary),
        composition_section(summary),
        component_attribution_section(summary),
        seed_analyses.logit_difference_section(summary),
        seed_analyses.backup_section(summary),
        logit_lens_section(summary),
        patching_section(summary, arrays, used),
        seed_analyses.probes_section(summary),
        *seed_analyses.loss_curve_sections(summary, arrays, used),
        *loss_table_sections(summary),
        *other_summary_sections(summary),
        *other_tensor_sections(arrays, summary, labels, used),
        tensor_listing(tensors),
    ]
    return render(
        "report.html.j2",
        title=title,
        facts=facts(summary),
        sections=[s for s in sections if s],
        step_axis_toggle=False,
        log_steps=False,
    )


def facts(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    found = [("task", summary.get("task")), ("step", summary.get("step")), ("probe loss", summary.get("loss"))]
    found += [(f"probe {name}", value) for name, value in summary.get("metrics", {}).items()]
    found += [
        (name, value)
        for name, value in summary.items()
        if name not in SUMMARY_KEYS and not isinstance(value, (dict, list))
    ]
    return found + ([("checkpoint", summary["checkpoint"])] if "checkpoint" in summary else [])


def token_task(summary: dict[str, Any]) -> bool:
    return "acc" in summary.get("metrics", {})


def head_table(
    summary: dict[str, Any], arrays: dict[str, np.ndarray] | None = None, used: set[str] | None = None
) -> Section | None:
    """Every per-head score; the `[layer head]` tensors holding one of its columns are named here, not redrawn."""
    if not summary.get("heads"):
        return None
    scores = {score for by_head in summary["heads"].values() for score in by_head}
    columns = [
        name
        for name, array in (arrays or {}).items()
        if tensor_dims(name, array.ndim) == ("layer", "head")
        and (name in scores or name.removeprefix("head_") in scores)
    ]
    if used is not None:
        used.update(columns)
    note = "Every head and every score; click a column to sort, hover over its name for what it measures."
    if columns:
        note += f" The [layer head] tensors {', '.join(columns)} hold the column of the same name."
    return Section("Heads", [table(summary["heads"], "head", descriptions.SCORES)], note)


def ablation_sections(summary: dict[str, Any]) -> list[Section]:
    heads, clean = summary.get("heads", {}), summary.get("loss")
    losses = {
        f"{mode}-ablated": {
            head: scores[f"{mode}_ablation_loss"] for head, scores in heads.items() if f"{mode}_ablation_loss" in scores
        }
        for mode in ("zero", "mean")
    }
    losses = {mode: by_head for mode, by_head in losses.items() if by_head}
    sections = []
    if losses:
        figure = bars(losses, "Probe loss with one head's output (hook_z) ablated", "ablated head", clean)
        note = "Zero: the head's output set to 0; mean: replaced by its batch mean at each position."
        sections.append(Section("Head ablations", [embed(figure)], note))
    if summary.get("hooks"):
        losses = {hook: scores.get("mean_ablation_loss") for hook, scores in summary["hooks"].items()}
        figure = bars(losses, "Probe loss with one hook mean-ablated", "hook", clean)
        sections.append(
            Section(
                "Mean-ablation sweep over hooks",
                [embed(figure)],
                "Each hook's activation replaced by its batch "
                "mean, one hook at a time: the hooks the task needs stand out.",
            )
        )
    return sections


def pattern_grid(array: np.ndarray) -> Frame:
    """A `[layer head query_pos key_pos]` tensor as one frame of per-head matrices."""
    return Frame("", [matrix for layer in array for matrix in layer])


def pattern_sections(arrays: dict[str, np.ndarray], labels: list[str], used: set[str]) -> list[Section]:
    sections = []
    for name, (heading, note) in PATTERNS.items():
        if name in arrays and arrays[name].ndim == 4:
            used.add(name)
            figure = heatmap_grid(
                [pattern_grid(arrays[name])],
                head_titles(arrays[name], labels),
                attention_scale(),
                Axes("key_pos", "query_pos"),
                title=name,
            )
            sections.append(Section(heading, [embed(figure)], note))
    return sections


def example_section(arrays: dict[str, np.ndarray], labels: list[str], used: set[str]) -> Section | None:
    """Attention on single probe sequences, a slider choosing the example; hover shows the tokens."""
    patterns, inputs = arrays.get("example_attention_patterns"), arrays.get("example_inputs")
    if patterns is None or patterns.ndim != 5:
        return None
    used.add("example_attention_patterns")
    tokens = inputs is not None and inputs.ndim == 2 and inputs.shape[1] == patterns.shape[-1]
    frames = []
    for example, pattern in enumerate(patterns[:MAX_EXAMPLES]):
        matrices = [matrix for layer in pattern for matrix in layer]
        positions = None
        if tokens:
            positions = [f"{position}:{int(token)}" for position, token in enumerate(inputs[example])]
        frames.append(Frame(str(example), matrices, positions, positions))
    axes = Axes("key_pos:token", "query_pos:token") if tokens else Axes("key_pos", "query_pos")
    titles = head_titles(patterns[0], labels)
    figure = heatmap_grid(
        frames, titles, attention_scale(), axes, slider_prefix="example", title="example_attention_patterns"
    )
    return Section(
        "Attention on single examples",
        [embed(figure)],
        "One probe sequence at a time: move the slider to choose the example; axes and hover show position:token "
        "(the tokens from example_inputs).",
    )


def subplot_titles(heads: list[str], family: str, summary: dict[str, Any]) -> list[str]:
    """Each head's label, with the head score read off its matrix (e.g. the QK diagonal contrast) where there is one."""
    score = TITLE_SCORES.get(family)
    scores = summary.get("heads", {})
    return [
        f"{head} {score} {scores[head][score]:.3g}"
        if isinstance(scores.get(head, {}).get(score), float) and math.isfinite(scores[head][score])
        else head
        for head in heads
    ]


def per_head_sections(
    arrays: dict[str, np.ndarray], used: set[str], token_task: bool, summary: dict[str, Any] | None = None
) -> list[Section]:
    """Tensors named `<group>.L{l}H{h}` (OV circuits, similarities, score terms, anything new): a grid per group."""
    groups: dict[str, dict[str, np.ndarray]] = {}
    for name, array in arrays.items():
        match = PER_HEAD_TENSOR.fullmatch(name)
        if match and array.ndim == 2:
            groups.setdefault(match["group"], {})[name.rsplit(".", 1)[1]] = array
            used.add(name)
    sections: dict[str, Section] = {}
    for group, matrices in groups.items():
        family = next((known for known in FAMILIES if group.startswith(known)), group.split(".")[0])
        heading, note, x_name, y_name, value_name = FAMILIES.get(
            family, (family.replace("_", " "), "", "column", "row", "value")
        )
        if family == "ov_circuit" and not token_task:
            x_name, y_name = "output dim", "input dim"
        elif family == "qk_circuit" and not token_task:
            x_name, y_name = "key input dim", "query input dim"
        shrunk = [shrink(matrix, HEATMAP_MAX_SIDE) for matrix in matrices.values()]
        block = shrunk[0][1]
        shape = next(iter(matrices.values())).shape
        square = shape[0] == shape[1]  # a [d_vocab d_mlp] map in square cells would be a sliver
        axes = Axes(x_name, y_name, block_labels(shape[1], block), block_labels(shape[0], block), square=square)
        scale = cosine_scale() if family == "rotary_similarity" else data_scale([m for m, _ in shrunk], value_name)
        titles = subplot_titles(list(matrices), family, summary or {})
        figure = heatmap_grid([Frame("", [m for m, _ in shrunk])], titles, scale, axes, title=group)
        block_note = f" Shown as means over {block}x{block} blocks." if block > 1 else ""
        sections.setdefault(family, Section(heading, [], note + block_note)).items.append(embed(figure))
    return list(sections.values())


def composition_section(summary: dict[str, Any]) -> Section | None:
    composition = summary.get("composition")
    if not isinstance(composition, dict) or "labels" not in composition:
        return None
    labels = [str(label) for label in composition["labels"]]
    modes = [mode for mode in ("q", "k", "v") if mode in composition]
    matrices = [np.array(composition[mode], dtype=np.float32) for mode in modes]
    figure = heatmap_grid(
        [Frame("", matrices)],
        [f"{mode.upper()}-composition" for mode in modes],
        attention_scale("composition score"),
        Axes("reading head", "writing head", labels, labels),
        columns=3,
    )
    return Section(
        "Composition scores",
        [embed(figure)],
        "How much each later head (column) reads, through its query, key or "
        "value, from what an earlier head (row) writes: |W_OV W| / (|W_OV| |W|), in [0, 1].",
    )


def loss_table_sections(summary: dict[str, Any]) -> list[Section]:
    """Adversarial losses and term importance: bars against the clean loss, and their table."""
    sections = []
    if isinstance(summary.get("adversarial"), dict):
        losses = summary["adversarial"]
        figure = bars(losses, "Loss on adversarial inputs", "input", losses.get("clean_loss", summary.get("loss")))
        sections.append(
            Section(
                "Adversarial inputs", [embed(figure), table({"loss": losses}, "adversarial", descriptions.ADVERSARIAL)]
            )
        )
    if isinstance(summary.get("term_importance"), dict):
        terms = {name: value for name, value in summary["term_importance"].items() if name != "layer"}
        layer = summary["term_importance"].get("layer")
        figure = bars(
            terms, f"Loss with one attention-score term of layer {layer} removed", "term removed", summary.get("loss")
        )
        sections.append(
            Section(
                "Attention-score term importance",
                [embed(figure), table({"loss": terms}, "term_importance", descriptions.TERMS)],
            )
        )
    return sections


def other_summary_sections(summary: dict[str, Any]) -> list[Section]:
    """Summary sections this report has no dedicated figure for: tables of their numbers, heatmaps of their matrices."""
    return [
        generic_section(name, value)
        for name, value in summary.items()
        if name not in SUMMARY_KEYS | HANDLED and isinstance(value, (dict, list))
    ]


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_matrix(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(row, list) and row and all(map(is_number, row)) for row in value)
        and len({len(row) for row in value}) == 1
    )


def generic_section(name: str, value: dict | list) -> Section:
    heading = name.replace("_", " ").capitalize()
    if not isinstance(value, dict):
        value = {"value": value}
    items: list = []
    scalars = {key: item for key, item in value.items() if is_number(item) or isinstance(item, str)}
    if scalars:
        items.append(table({key: {"value": item} for key, item in scalars.items()}, ""))
    rows = {
        key: item
        for key, item in value.items()
        if isinstance(item, dict) and item and all(is_number(v) or v is None for v in item.values())
    }
    if rows:
        items.append(table(rows, ""))
    for key, item in value.items():
        if is_matrix(item):
            matrix = np.array(item, dtype=np.float32)
            figure = heatmap_grid(
                [Frame("", [shrink(matrix, HEATMAP_MAX_SIDE)[0]])],
                [key],
                data_scale([matrix], key),
                Axes("column", "row", square=False),
            )
            items.append(embed(figure))
        elif key not in scalars and key not in rows:
            items.append(Preformatted(f"{key} (raw)", json.dumps(item, indent=1)[:20000]))
    return Section(heading, items, f"The summary's '{name}' section.")


def other_tensor_sections(
    arrays: dict[str, np.ndarray], summary: dict[str, Any], labels: list[str], used: set[str]
) -> list[Section]:
    """Tensors no section above drew, each as the figure its dimensions call for (tensor_figures)."""
    items = [
        embed(tensor_figure(name, array, labels, component_labels(summary)))
        for name, array in arrays.items()
        if name not in used and array.ndim <= 5 and array.size > 0
    ]
    note = "Tensors of the analysis without a dedicated section above, axes named by their dimensions."
    return [Section("Other tensors", items, note)] if items else []


def component_labels(summary: dict[str, Any]) -> list[str]:
    """The rows of `component_direct_attribution`: embed, pos_embed, mlp{l}..., L{l}H{h}..., attn_bias."""
    other = summary.get("direct_attribution")
    other = other if isinstance(other, dict) else {}
    embeddings = [name for name in ("embed", "pos_embed") if name in other]
    layers = summary.get("layers", {})
    mlps = [
        f"mlp{layer}"
        for layer in sorted(layers, key=lambda key: int(key) if key.isdigit() else 0)
        if "mlp_direct_attribution" in layers[layer]
    ]
    return [*embeddings, *mlps, *summary.get("heads", {}), *(["attn_bias"] if "attn_bias" in other else [])]


def tensor_listing(tensors: dict[str, torch.Tensor]) -> Section:
    rows = {name: {"shape": " x ".join(map(str, tensor.shape))} for name, tensor in tensors.items()}
    return Section("Tensors in tensors.safetensors", [table(rows, "name")])
