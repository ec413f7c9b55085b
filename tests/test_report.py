"""HTML reports without a browser: every string escaped, offline, plotly.js once, size; TensorBoard images."""

from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path

import numpy as np
import plotly.io
import plotly.offline
import pytest
import torch
from analysis.conftest import TASKS, tiny_task
from markupsafe import escape
from safetensors.torch import save_file

from lit_interp import runlogs
from lit_interp.analysis.snapshot import run_analysis
from lit_interp.cli import main
from lit_interp.heads import PER_HEAD_TENSOR
from lit_interp.images import BLUES_ANCHORS, RED_BLUE_ANCHORS, colourmap, heatmap_rgb
from lit_interp.report.checkpoint import checkpoint_report
from lit_interp.report.figures import Axes, Frame, data_scale, heatmap_grid, shrink, step_lines
from lit_interp.report.run import run_report, thin
from lit_interp.report.tensor_figures import tensor_dims, tensor_figure
from lit_interp.snapshots import read_snapshots
from lit_interp.tasks.bos_ints import BosIntsDataModule, BosIntsModule

XSS = "<script>alert(1)</script>"
EVIL_HEAD = "<img src=x onerror=alert(2)>"


@pytest.fixture(scope="module")
def analysis() -> tuple[dict, dict[str, torch.Tensor]]:
    """A real analysis of a tiny untrained 2-layer, 2-head BOS model (every section the analysis writes)."""
    torch.manual_seed(0)
    module = BosIntsModule(d_model=16, d_head=8, n_heads=2, d_vocab=21, n_ctx=8)
    datamodule = BosIntsDataModule(d_vocab=21, n_ctx=8, bos_token=20)
    return run_analysis(module, datamodule, step=7, probe_batch_size=16)


@pytest.fixture(scope="module")
def checkpoint_page(analysis) -> str:
    return checkpoint_report(*analysis, "checkpoint")


def figure_specs(page: str) -> list[dict]:
    specs = re.findall(
        r'<script type="application/json" class="figure-spec" data-target="[^"]+">(.*?)</script>', page, re.S
    )
    return [json.loads(spec) for spec in specs]


def values(array) -> list:
    """A plotly array from figure JSON: a plain list, or base64 typed-array data {"dtype", "bdata"}."""
    if isinstance(array, dict):
        dtypes = {"f4": np.float32, "f8": np.float64, "i1": np.int8, "i2": np.int16, "i4": np.int32, "u1": np.uint8}
        return np.frombuffer(base64.b64decode(array["bdata"]), dtypes[array["dtype"]]).tolist()
    return array


def plotly_payloads(page: str) -> list[str]:
    return re.findall(r'<script type="application/octet-stream" id="plotly-js-gzip-base64">(.*?)</script>', page, re.S)


def assert_offline(page: str) -> None:
    """plotly.js inlined exactly once and equal to the installed one; nothing to fetch from the network."""
    payloads = plotly_payloads(page)
    assert len(payloads) == 1
    assert gzip.decompress(base64.b64decode(payloads[0])).decode() == plotly.offline.get_plotlyjs()
    assert page.count(payloads[0][:200]) == 1
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script src" not in page and "<link" not in page


def test_checkpoint_report_is_offline_and_draws_every_analysis(analysis, checkpoint_page):
    summary, tensors = analysis
    page = checkpoint_page
    assert_offline(page)
    specs = figure_specs(page)
    titles = {annotation["text"] for spec in specs for annotation in spec["layout"].get("annotations", [])}
    assert {"L0H0", "L0H1", "L1H0", "L1H1", "Q-composition"} <= titles
    contrast = summary["heads"]["L1H0"]["qk_diagonal_contrast"]  # read off the QK circuit: beside it
    assert f"L1H0 qk_diagonal_contrast {contrast:.3g}" in titles
    sliders = [spec for spec in specs if spec["layout"].get("sliders")]
    assert len(sliders) == 2  # the examples' patterns, clean and with layer 0 mean-ablated
    assert len(sliders[0]["frames"]) == tensors["example_attention_patterns"].shape[0]
    second_example = sliders[0]["frames"][1]["data"][0]  # axes (and hover) label each position with its token
    tokens = [int(token) for token in tensors["example_inputs"][1]]
    assert (
        second_example["x"] == second_example["y"] == [f"{position}:{token}" for position, token in enumerate(tokens)]
    )
    heading_rows = re.findall(r"<tr><td data-sort=\"(L\dH\d)\">", page)
    assert heading_rows[:4] == ["L0H0", "L0H1", "L1H0", "L1H1"]
    for score in summary["heads"]["L0H0"]:
        assert f">{score}</th>" in page
    assert 'title="Mean attention from each position to the one just before it' in page
    assert len(page.encode()) < 3_000_000


def test_attention_colour_scale_is_fixed_and_signed_scales_centre_on_zero(analysis, checkpoint_page):
    tensors = analysis[1]
    specs = figure_specs(checkpoint_page)
    scales = {
        spec["layout"].get("coloraxis", {}).get("colorbar", {}).get("title", {}).get("text"): spec["layout"].get(
            "coloraxis"
        )
        for spec in specs
    }
    assert (scales["attention"]["cmin"], scales["attention"]["cmax"]) == (0, 1)
    assert scales["logit"]["cmin"] == -scales["logit"]["cmax"] != 0
    bound = max(abs(float(tensor.min())) for name, tensor in tensors.items() if name.startswith("ov_circuit."))
    bound = max(bound, max(float(tensor.max()) for name, tensor in tensors.items() if name.startswith("ov_circuit.")))
    assert scales["logit"]["cmax"] == pytest.approx(bound, rel=1e-5)


def test_every_string_from_a_summary_or_tensor_name_is_escaped(analysis):
    summary, tensors = analysis
    summary = json.loads(json.dumps(summary))
    summary["task"] = XSS
    summary["heads"][EVIL_HEAD] = {"<b onmouseover=alert(3)>score": 0.5}
    summary["new_section"] = {XSS: 1.0, "rows": {EVIL_HEAD: {"x": 1}}, "matrix": [[1.0, -1.0], [0.0, 2.0]]}
    tensors = tensors | {"<svg onload=alert(4)>": torch.ones(2, 3)}
    page = checkpoint_report(summary, tensors, XSS)
    for attack in (XSS, EVIL_HEAD, "<b onmouseover", "<svg onload"):
        assert attack not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, as text
    # Inside figure JSON, plotly would read HTML tags in text: escaped once more for it.
    texts = json.dumps(figure_specs(page))
    assert "&lt;svg onload=alert(4)&gt;" in texts and "<svg" not in texts


def write_run(run: Path, summary: dict, tensors: dict[str, torch.Tensor], steps: list[int]) -> None:
    """A run directory of snapshots (attention drifting to the diagonal step by step) and a metrics.csv."""
    (run / "analysis").mkdir(parents=True)
    for index, step in enumerate(steps):
        weight = index / (len(steps) - 1)
        patterns = (
            tensors["attention_patterns"] * (1 - weight) + torch.eye(tensors["attention_patterns"].shape[-1]) * weight
        )
        score = {"prev_token_score": 0.1 + 0.8 * weight, "bos_score": 0.3}
        step_summary = summary | {
            "step": step,
            "heads": {head: scores | score for head, scores in summary["heads"].items()},
        }
        (run / "analysis" / f"step_{step:07d}.json").write_text(json.dumps(step_summary))
        save_file(
            {"attention_patterns": patterns.contiguous()}
            | {k: v for k, v in tensors.items() if k.startswith("ov_circuit.")},
            str(run / "analysis" / f"step_{step:07d}.safetensors"),
        )
    (run / "metrics.csv").write_text("epoch,step,train/loss,val/loss\n0,9,2.0,\n0,19,1.0,1.5\n0,29,0.5,\n")


def test_run_report_slider_formation_and_curves(analysis, tmp_path):
    summary, tensors = analysis
    steps = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144]
    write_run(tmp_path / "run", summary, tensors, steps)
    snapshots = read_snapshots(tmp_path / "run")
    page = run_report(snapshots, "run")
    assert_offline(page)
    specs = figure_specs(page)
    attention = next(
        spec for spec in specs if spec["layout"].get("sliders") and spec["layout"]["coloraxis"]["cmax"] == 1
    )
    assert [frame["name"] for frame in attention["frames"]] == [str(step) for step in steps]
    assert attention["layout"]["sliders"][0]["active"] == len(steps) - 1
    # prev_token_score 0.1 + 0.8 * index / 10 first reaches 0.5 at index 5: step 13, marked and tabled.
    assert re.search(r'<td data-sort="L0H0">L0H0</td><td data-sort="13.0">13</td>', page)
    stars = [trace for spec in specs for trace in spec["data"] if trace.get("marker", {}).get("symbol") == "star"]
    assert len(stars) == 4 and all(trace["x"] == [13] for trace in stars)
    curves = next(spec for spec in specs if spec["layout"].get("title", {}).get("text") == "loss")
    assert {trace["name"]: values(trace["y"]) for trace in curves["data"]} == {
        "train/loss": [2.0, 1.0, 0.5],
        "val/loss": [1.5],
    }
    assert 'id="log-steps"' in page


def test_default_size_budget_with_many_snapshots(analysis, tmp_path):
    summary, tensors = analysis
    write_run(
        tmp_path / "run", summary, tensors, list(range(1, 251))
    )  # more than any config writes, than a slider shows
    page = run_report(read_snapshots(tmp_path / "run"), "run")
    assert len(page.encode()) < 5_000_000


def test_thinning_keeps_first_and_last_and_shrink_takes_block_means():
    assert thin(5, 10) == [0, 1, 2, 3, 4]
    kept = thin(1000, 30_000, budget=300_000)
    assert kept[0] == 0 and kept[-1] == 999 and len(kept) == 10
    matrix = np.arange(300 * 300, dtype=np.float32).reshape(300, 300)
    small, block = shrink(matrix, 128)
    assert block == 3 and small.shape == (100, 100)
    assert small[0, 0] == pytest.approx(matrix[:3, :3].mean()) and small[-1, -1] == pytest.approx(
        matrix[-3:, -3:].mean()
    )


def test_heatmap_image_has_ticks_and_a_fixed_colour_bar():
    uniform = torch.full((10, 10), 0.5)
    image = heatmap_rgb([uniform, uniform])
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    middle = colourmap(BLUES_ANCHORS, np.array(0.5))
    assert (image == middle).all(-1).sum() >= 2 * 160 * 160  # 0.5 drawn as the middle of [0, 1], not stretched
    bar_columns = image[:, -60:]
    assert (bar_columns == colourmap(BLUES_ANCHORS, np.array(1.0))).all(-1).any() and (
        bar_columns == colourmap(BLUES_ANCHORS, np.array(0.0))
    ).all(-1).any()
    assert (image[:, :10] == 0).all(-1).any()  # row tick labels drawn in black left of the heatmap
    signed = heatmap_rgb([torch.tensor([[-2.0, 1.0], [0.0, 2.0]])])
    assert signed.shape[0] > 160
    assert (signed == colourmap(RED_BLUE_ANCHORS, np.array(0.5))).all(-1).sum() >= 80 * 80  # 0 at the middle of +-2
    wide = heatmap_rgb([torch.rand(2, 512)])  # rows one pixel high: every label still inside the image
    assert wide.shape[1] > 512 and (wide[:, :10] == 0).all(-1).any()


def test_runlogs_read_event_files_and_csv(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    for step, value in [(0, 3.0), (10, 2.0), (20, 1.0)]:
        writer.add_scalar("train/loss", value, step)
        writer.add_scalar("analysis/loss", value, step)
    writer.close()
    (tmp_path / "metrics.csv").write_text("step,val/acc,train/loss\n5,0.5,9.0\n15,0.75,\n")
    scalars = runlogs.read_scalars(tmp_path)
    assert scalars == {"train/loss": ([0, 10, 20], [3.0, 2.0, 1.0]), "val/acc": ([5, 15], [0.5, 0.75])}


MALFORMED = {
    "script step": {"step": XSS, "task": "t", "loss": 1.0},
    "empty object": {},
    "boolean step": {"step": True, "task": "t", "loss": 1.0},
    "list": [1, 2],
    "loss text": {"step": 1, "task": "t", "loss": "low"},
    "heads not numbers": {"step": 1, "task": "t", "loss": 1.0, "heads": {"L0H0": {"score": "<b>"}}},
    "metrics not a mapping": {"step": 1, "task": "t", "loss": 1.0, "metrics": [0.5]},
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_snapshot_is_one_line_naming_the_file(case, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "analysis").mkdir(parents=True)
    bad = run / "analysis" / "step_0000003.json"
    bad.write_text(json.dumps(MALFORMED[case]))
    with pytest.raises(SystemExit) as exit:
        main(["analyze", "--run", str(run)])
    err = capsys.readouterr().err
    assert (
        exit.value.code == 2
        and err.startswith("lit_interp: error: snapshot ")
        and str(bad) in err
        and err.count("\n") == 1
    ), err
    assert "Traceback" not in err and not (run / "analysis_report").exists()


@pytest.fixture(scope="module", params=TASKS)
def task_analysis(request) -> tuple[dict, dict[str, torch.Tensor]]:
    """Every key the registry writes for one builtin task (tiny untrained model, expensive analyses on)."""
    torch.manual_seed(0)
    module, datamodule = tiny_task(request.param)
    return run_analysis(module, datamodule, step=0, probe_batch_size=16, hook_mean_ablation=False)


def drawn_part(page: str) -> str:
    """The page up to the closing listing of tensor names (which would show every name, drawn or not)."""
    return page[: page.index("Tensors in tensors.safetensors</h2>")]


def test_every_summary_key_and_tensor_of_every_task_is_shown(task_analysis):
    summary, tensors = task_analysis
    page = drawn_part(checkpoint_report(summary, tensors, "every key"))
    for scores in [*summary.get("heads", {}).values(), *summary.get("layers", {}).values()]:
        for score in scores:
            assert f">{score}</th>" in page, score
    for section, value in summary.items():
        if isinstance(value, dict) and section not in ("heads", "layers", "metrics"):
            assert re.search(rf"\b{re.escape(section)}\b", page), section
            for key in value if section != "composition" else ():
                assert re.search(rf"\b{re.escape(key)}(?![\w])", page), f"{section}.{key}"
    texts = json.dumps(figure_specs(page)) + page
    for name in tensors:
        shown = PER_HEAD_TENSOR.fullmatch(name)["group"] if PER_HEAD_TENSOR.fullmatch(name) else name
        assert re.search(rf"(?<![\w.]){re.escape(shown)}(?![\w])", texts), name


def test_every_tensor_of_every_task_has_named_dimensions_that_title_its_axes(task_analysis):
    summary, tensors = task_analysis
    labels = list(summary["heads"])
    for name, tensor in tensors.items():
        if PER_HEAD_TENSOR.fullmatch(name):
            continue
        array = tensor.float().numpy()
        dims = tensor_dims(name, array.ndim)
        assert not dims[0].startswith("dim"), f"{name} {tuple(array.shape)}: add its dimensions to DIMS"
        spec = json.loads(plotly.io.to_json(tensor_figure(name, array, labels)))
        if not np.isfinite(array).any():
            assert "all values NaN" in spec["layout"]["annotations"][0]["text"]
            continue
        x_titles = {
            axis["title"]["text"] for key, axis in spec["layout"].items() if key.startswith("xaxis") and "title" in axis
        }
        y_titles = {
            axis["title"]["text"] for key, axis in spec["layout"].items() if key.startswith("yaxis") and "title" in axis
        }
        assert x_titles == {dims[-1]}, (name, dims, x_titles)
        if spec["data"][0]["type"] == "heatmap":
            assert y_titles == {dims[-2]}, (name, dims, y_titles)


def test_an_all_nan_heatmap_is_a_note_with_its_reason():
    nan = np.full((2, 5), np.nan, np.float32)
    figure = heatmap_grid([Frame("", [nan])], ["grid"], data_scale([nan], "v"), Axes("pos", "layer"), reason="why")
    spec = json.loads(plotly.io.to_json(figure))
    assert spec["data"] == [] and spec["layout"]["annotations"][0]["text"] == "all values NaN: why"
    long = heatmap_grid([Frame("", [nan])], ["grid"], data_scale([nan], "v"), Axes("pos", "layer"), reason="x " * 60)
    assert long.layout.annotations[0].text.count("<br>") == 1  # wrapped: plotly draws one line however long
    summary, tensors = run_analysis(*tiny_task("prev_token_digits"), step=0, probe_batch_size=16)
    assert "reason" in summary["patching"] and not np.isfinite(tensors["head_patching_logit_difference"]).any()
    page = checkpoint_report(summary, tensors, "noise")
    assert f"Every loss patching score is NaN (patching.reason): {escape(summary['patching']['reason'])}" in page
    reason = summary["logit_difference_patching"]["reason"]
    notes = [
        a["text"].replace("<br>", " ") for spec in figure_specs(page) for a in spec["layout"].get("annotations", [])
    ]
    assert notes.count(f"all values NaN: {escape(reason)}") == 2  # both logit-difference patching grids
    assert ">loss_gap</td>" not in page  # a note, not a row of losses


def test_signed_matrices_centre_on_zero_and_shares_are_fixed_to_the_unit_interval(task_analysis):
    summary, tensors = task_analysis
    for name, tensor in tensors.items():
        array = tensor.float().numpy()
        if PER_HEAD_TENSOR.fullmatch(name) or array.ndim < 2 or not np.isfinite(array).any():
            continue
        spec = json.loads(plotly.io.to_json(tensor_figure(name, array, list(summary["heads"]))))
        if spec["data"][0]["type"] != "heatmap":
            continue
        low, high = spec["layout"]["coloraxis"]["cmin"], spec["layout"]["coloraxis"]["cmax"]
        if "pattern" in name:
            assert (low, high) == (0, 1), name
        elif np.nanmin(array) < 0:
            assert low == -high, name


def test_sparse_series_are_points_and_dense_ones_lines():
    figure = step_lines({"every step": ([1, 2, 3], [0.1, 0.2, 0.3]), "last two": ([2, 3], [0.5, 0.6])}, "t", "v")
    assert [trace.mode for trace in figure.data] == ["lines+markers", "markers"]


def test_a_range_of_a_thousandth_is_said_on_the_axis():
    figure = step_lines({"loss": ([1, 2, 3], [2.8775, 2.8785, 2.8795])}, "t", "loss")
    assert figure.layout.yaxis.title.text == "loss (all within 0.002)"
    assert step_lines({"loss": ([1, 2, 3], [1.0, 2.0, 3.0])}, "t", "loss").layout.yaxis.title.text == "loss"


def test_a_summary_read_back_from_json_with_nulls_for_nan_renders(task_analysis):
    summary, tensors = task_analysis
    summary = json.loads(json.dumps(summary).replace("NaN", "null"))  # snapshots write NaN as null
    for scores in summary["heads"].values():
        scores |= {"logit_difference_attribution": None, "backup_logit_difference_change": None}
    for section in ("patching", "loss_by_c", "attention_under_ablation", "logit_difference"):
        if isinstance(summary.get(section), dict):
            summary[section] = {key: None for key in summary[section]}
    page = checkpoint_report(summary, tensors, "nulls")
    assert "Tensors in tensors.safetensors" in page


def test_large_w_ov_entries_as_a_layer_head_grid():
    summary = {"step": 0, "task": "t", "loss": 1.0, "heads": {"L0H0": {"ov_large_entry_fraction": 0.25}, "L1H1": {}}}
    spec = next(s for s in figure_specs(checkpoint_report(summary, {}, "t")) if s["data"][0]["type"] == "heatmap")
    grid = np.array(values(spec["data"][0]["z"])).reshape(2, 2)
    assert grid[0, 0] == 0.25 and np.isnan(grid[1, 1]) and np.isnan(grid[0, 1])
    assert (spec["layout"]["coloraxis"]["cmin"], spec["layout"]["coloraxis"]["cmax"]) == (0, 1)
