"""Self-contained HTML reports (plots embedded as base64 PNGs) of one analysis or of a run's snapshots."""

from __future__ import annotations

import html
import math
from typing import Any

import torch

from lit_interp import plots

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:4px}
.grid{display:flex;flex-wrap:wrap}.grid img{max-width:340px}"""


def page(title: str, body: list[str]) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n")


def image(figure, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{plots.to_base64_png(figure)}'>"


def number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))


def table(rows: dict[str, dict[str, Any]], first_column: str) -> str:
    """Rows keyed by name, columns = every key that any row has (a missing value is left blank)."""
    columns = list(dict.fromkeys(key for row in rows.values() for key in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in [first_column, *columns])
    body = "".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{number(row[c]) if c in row else ''}</td>" for c in columns) + "</tr>"
        for name, row in rows.items()
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def checkpoint_report(summary: dict[str, Any], tensors: dict[str, torch.Tensor], title: str) -> str:
    """Scores, ablations, attention patterns, circuits and similarity matrices of one analysis."""
    clean_loss = summary["loss"]
    body = [f"<p>task <b>{html.escape(summary['task'])}</b>, step <b>{summary['step']}</b>, probe loss <b>{clean_loss:.4g}</b></p>",
            table({"probe batch": summary.get("metrics", {}) | {"loss": clean_loss}}, "")]
    heads = summary.get("heads", {})
    if heads:
        body += ["<h2>Head scores</h2>", table(heads, "head")]
        for mode in ("zero", "mean"):
            losses = {head: scores[f"{mode}_ablation_loss"] for head, scores in heads.items() if f"{mode}_ablation_loss" in scores}
            if losses:
                body.append(image(plots.bar_figure(losses, f"loss with each head's hook_z {mode}-ablated", clean_loss), f"{mode} ablation"))
    if "hooks" in summary:
        losses = {hook: scores["mean_ablation_loss"] for hook, scores in summary["hooks"].items()}
        body += ["<h2>Mean-ablation sweep over hooks</h2>", image(plots.bar_figure(losses, "loss with one hook mean-ablated", clean_loss), "hook sweep")]
    for section in ("adversarial", "term_importance"):
        if section in summary:
            body += [f"<h2>{section.replace('_', ' ').capitalize()}</h2>", table({section: summary[section]}, "")]
    body += tensor_sections(summary, tensors)
    return page(title, body)


def tensor_sections(summary: dict[str, Any], tensors: dict[str, torch.Tensor]) -> list[str]:
    body = []
    headings = {"attention_patterns": "Mean attention patterns on the probe batch",
                "repeated_sequence_patterns": "Mean attention patterns on a random sequence repeated twice"}
    for name, heading in headings.items():
        if name in tensors and tensors[name].ndim == 4:  # [layer head query_pos key_pos]
            body.append(f"<h2>{heading}</h2>")
            body += [image(plots.attention_figure(patterns, layer), f"{name} L{layer}") for layer, patterns in enumerate(tensors[name])]
    groups = {"ov_circuit.": ("Full OV circuits W_E W_OV W_U", "output", "source"),
              "rotary_similarity.": ("Cosine similarity across positions", "pos", "pos"),
              "attn_score_terms.": ("Mean attention-score terms", "key_pos", "query_pos")}
    for prefix, (heading, xlabel, ylabel) in groups.items():
        matrices = {name: tensor for name, tensor in tensors.items() if name.startswith(prefix) and tensor.ndim == 2}
        if matrices:
            body.append(f"<h2>{heading}</h2><div class='grid'>")
            body += [image(plots.matrix_figure(matrix, name[len(prefix):], xlabel, ylabel), name) for name, matrix in matrices.items()]
            body.append("</div>")
    if "composition" in summary:
        labels = summary["composition"]["labels"]
        body.append("<h2>Composition scores (row: earlier head writing, column: later head reading)</h2><div class='grid'>")
        body += [image(plots.matrix_figure(torch.tensor(summary["composition"][mode]), f"{mode.upper()}-composition", xlabel="reading head", ylabel="writing head", labels=labels), mode)
                 for mode in ("q", "k", "v") if mode in summary["composition"]]
        body.append("</div>")
    listing = {name: {"shape": " x ".join(map(str, tensor.shape))} for name, tensor in tensors.items()}
    body += ["<h2>Tensors in tensors.safetensors</h2>", table(listing, "name")]
    return body


def series(summaries: list[dict[str, Any]], get) -> list[float]:
    """One value per snapshot; NaN where a snapshot lacks it (e.g. no hook sweep at that step)."""
    values = []
    for summary in summaries:
        try:
            values.append(float(get(summary)))
        except (KeyError, TypeError):
            values.append(math.nan)
    return values


def trajectories(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Every scalar of the snapshots as a series over steps: what the trajectory report plots."""
    steps = [summary["step"] for summary in summaries]
    heads = list(dict.fromkeys(head for summary in summaries for head in summary.get("heads", {})))
    scores = list(dict.fromkeys(name for summary in summaries for scores in summary.get("heads", {}).values() for name in scores))
    hooks = list(dict.fromkeys(hook for summary in summaries for hook in summary.get("hooks", {})))
    metrics = list(dict.fromkeys(name for summary in summaries for name in summary.get("metrics", {})))
    return {
        "steps": steps,
        "loss": series(summaries, lambda s: s["loss"]),
        "metrics": {name: series(summaries, lambda s: s["metrics"][name]) for name in metrics},
        "heads": {score: {head: series(summaries, lambda s: s["heads"][head][score]) for head in heads} for score in scores},
        "hooks": {hook: series(summaries, lambda s: s["hooks"][hook]["mean_ablation_loss"]) for hook in hooks},
    }


def trajectory_report(summaries: list[dict[str, Any]], title: str) -> str:
    """Loss, metrics, every head score and ablation loss, and the hook sweep, against step."""
    data = trajectories(summaries)
    steps = data["steps"]
    body = [f"<p>{len(steps)} snapshots, steps {steps[0]} to {steps[-1]}, task <b>{html.escape(summaries[-1]['task'])}</b></p>",
            "<h2>Loss on the probe batch</h2>", image(plots.lines_figure(steps, {"loss": data["loss"]}, "probe loss", "loss", log_y=min(data["loss"]) > 0), "loss")]
    if data["metrics"]:
        body.append(image(plots.lines_figure(steps, data["metrics"], "probe metrics"), "metrics"))
    body.append("<h2>Head scores and ablation losses</h2><div class='grid'>")
    for score, by_head in data["heads"].items():
        lines = by_head | ({"clean loss": data["loss"]} if score.endswith("ablation_loss") else {})
        body.append(image(plots.lines_figure(steps, lines, score), score))
    body.append("</div>")
    if data["hooks"]:
        body += ["<h2>Mean-ablation sweep over hooks</h2>",
                 image(plots.lines_figure(steps, data["hooks"] | {"clean loss": data["loss"]}, "loss with one hook mean-ablated"), "hooks")]
    last = summaries[-1]
    if last.get("heads"):
        body += [f"<h2>Head scores at the last snapshot (step {last['step']})</h2>", table(last["heads"], "head")]
    return page(title, body)
