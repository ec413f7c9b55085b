"""Run-level phases (memorised, generalised) and modular addition's progress measures in the run and cross-run
reports, on synthetic snapshot series whose answers are known."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_interp.analysis import fourier
from lit_interp.formation import PHASE_CHANGES, PHASES, Formation, describe_phase, phase_steps
from lit_interp.report.html import Figure, Section, plain
from lit_interp.report.phase_figures import final_key_losses, modular_addition_sections, phase_section
from lit_interp.report.run import run_report, score_sections, sparse_series, trajectories
from lit_interp.report.runs import runs_report
from lit_interp.report.runs_table import csv_text
from lit_interp.snapshots import read_snapshots, write_snapshot

P = 7
STEPS = [10, 20, 30, 40]


def progress(train_acc: list[float], test_acc: list[float]) -> list[dict]:
    return [
        {
            "step": step,
            "task": "ModularAdditionModule",
            "loss": 1.0,
            "progress_measures": {"train_acc": a, "test_acc": b},
        }
        for step, a, b in zip(STEPS, train_acc, test_acc)
    ]


def test_memorised_and_generalised_at_the_first_steps_their_rules_hold():
    summaries = progress([0.5, 0.9, 1.0, 1.0], [0.1, 0.5, 0.989, 0.995])
    assert PHASES["memorised"].value == 1.0 and PHASES["generalised"].value == 0.99
    assert phase_steps(STEPS, summaries) == {"memorised": Formation(30, False), "generalised": Formation(40, False)}


def test_a_run_that_never_generalises_has_no_step_and_says_so():
    reached = phase_steps(STEPS, progress([0.5, 1.0, 1.0, 1.0], [0.1, 0.5, 0.98, math.nan]))
    assert reached == {"memorised": Formation(20, False), "generalised": None}
    assert describe_phase(reached["generalised"], STEPS[-1]) == "not by step 40"


def test_memorised_at_the_first_snapshot_is_at_or_before_it():
    summaries = progress([1.0, 1.0, 1.0, 1.0], [0.2, None, 0.995, 1.0])
    reached = phase_steps(STEPS, summaries)
    assert reached["memorised"] == Formation(10, True)
    assert describe_phase(reached["memorised"], 40) == "<= 10"
    assert reached["generalised"] == Formation(30, False)  # None (not measured) never reaches a phase


def test_a_run_without_the_measurements_has_no_phases():
    assert phase_steps(STEPS, [{"step": step, "task": "T", "loss": 1.0} for step in STEPS]) == {}


def one_frequency_logits(p: int, k: int, scale: float) -> torch.Tensor:
    """`[p² c]` logits scale·cos(w_k(a+b-c)): wholly along frequency k's (a+b) directions, mean 0 over pairs."""
    a, b = torch.arange(p).repeat_interleave(p), torch.arange(p).repeat(p)
    c = torch.arange(p)
    return scale * torch.cos(2 * math.pi * k * ((a + b)[:, None] - c[None, :]) / p).double()


def write_modular_run(run: Path, keys_per_step: list[list[int]], test_acc: list[float]) -> list[torch.Tensor]:
    """Snapshots whose logits are frequency 1's alone (growing), each with its own key frequencies and a restricted
    loss that is not the final-key one (a sentinel), Fourier tensors at every step."""
    train_pairs = torch.arange(0, P * P, 2)
    all_logits = []
    for index, (step, keys) in enumerate(zip(STEPS, keys_per_step)):
        logits = one_frequency_logits(P, 1, 1.0 + index)
        all_logits.append(logits)
        norms = torch.arange(P, dtype=torch.float32)
        spectrum = torch.rand(P, P)
        frequency = torch.tensor([1, 1, 1, 2, 0, 3, 1, 2], dtype=torch.float32)
        tensors = {
            "logit_sum_coefficients": fourier.logit_sum_coefficients(logits).float(),
            "logit_mean": logits.mean(0).float(),
            "train_logits": logits[train_pairs].float(),
            "train_pairs": train_pairs.float(),
            "embed_fourier_norms": norms,
            "neuron_logit_fourier_norms": norms.flip(0),
            "neuron_fourier_norms": spectrum,
            "neuron_frequency": frequency,
            "neuron_frequency_fraction": torch.tensor([0.9, 0.8, 0.4, 0.9, math.nan, 0.7, 0.6, 0.2]),
        }
        summary = {
            "step": step,
            "task": "ModularAdditionModule",
            "loss": 1.0,
            "progress_measures": {
                "train_loss": 1.0 / (index + 1),
                "train_acc": 1.0,
                "test_loss": 2.0,
                "test_acc": test_acc[index],
                "restricted_loss": 123.0,
                "excluded_loss": 456.0,
                "sum_squared_weights": 10.0 - index,
            },
            "fourier": {"key_frequencies": keys, "embed_gini": 0.1 * index, "neuron_logit_gini": 0.2},
        }
        write_snapshot(run, step, summary, tensors)
    return all_logits


def figures(section: Section) -> list[dict]:
    return [json.loads(item.json) for item in section.items if isinstance(item, Figure)]


def values(array) -> list:
    if isinstance(array, dict):
        dtypes = {"f4": np.float32, "f8": np.float64, "i1": np.int8, "i2": np.int16, "i4": np.int32, "i8": np.int64}
        return np.frombuffer(base64.b64decode(array["bdata"]), dtypes[array["dtype"]]).tolist()
    return list(array)


def test_restricted_and_excluded_loss_use_the_last_snapshots_key_frequencies(tmp_path):
    logits = write_modular_run(tmp_path, [[2], [2, 3], [3], [1]], [0.1, 0.5, 0.995, 1.0])
    run = read_snapshots(tmp_path)
    losses = final_key_losses(run, [1])
    labels = fourier.pair_labels(torch.arange(P * P), P)
    # Frequency 1 holds the whole logit table: keeping it is the full loss, removing it leaves uniform logits.
    expected = [torch.nn.functional.cross_entropy(table, labels).item() for table in logits]
    assert losses["restricted_loss"] == pytest.approx(expected, rel=1e-4)
    assert losses["excluded_loss"] == pytest.approx([math.log(P)] * len(STEPS), rel=1e-4)
    # With the first snapshot's own key (2) nothing of the table would be kept: the uniform loss, not the full one.
    assert final_key_losses(run, [2])["restricted_loss"][0] == pytest.approx(math.log(P), rel=1e-4)


def test_run_report_draws_the_progress_measures_spectra_and_phases(tmp_path):
    write_modular_run(tmp_path, [[2], [2, 3], [3], [1]], [0.1, 0.5, 0.995, 1.0])
    run = read_snapshots(tmp_path)
    progress_section, spectra = modular_addition_sections(run)
    loss, accuracy, weights, gini = figures(progress_section)
    names = [trace.get("name") for trace in loss["data"]]
    assert plain("restricted loss with the last snapshot's key frequencies [1]") in names
    assert plain("excluded loss with the last snapshot's key frequencies [1]") in names
    assert loss["layout"]["yaxis"]["type"] == "log"
    restricted = next(t for t in loss["data"] if t["name"].startswith("restricted"))
    assert values(restricted["y"])[0] != pytest.approx(123.0)  # not the snapshot's own (sentinel) value
    # The phase lines: memorised at the first snapshot (<= 10), generalised at 30.
    lines = {shape["name"]: shape["x0"] for shape in accuracy["layout"]["shapes"]}
    assert lines == {"memorised at step <= 10": 10, "generalised at step 30": 30}
    assert values(weights["data"][0]["y"]) == [10, 9, 8, 7]
    assert [trace["name"] for trace in gini["data"]] == ["embedding W_E", "neuron-logit map W_out W_U"]

    embed_bars, logit_bars, heatmap, histogram = figures(spectra)
    assert embed_bars["data"][0]["x"] == fourier.component_names(P)
    assert values(logit_bars["data"][0]["y"]) == [6, 5, 4, 3, 2, 1, 0]
    assert heatmap["data"][0]["x"] == fourier.component_names(P)
    explained, rest = histogram["data"]
    # Neurons per frequency 0..3, split by whether their frequency explains at least half their variance.
    assert values(explained["y"]) == [0, 3, 1, 1] and values(rest["y"]) == [1, 1, 1, 0]
    assert [shape["x0"] for shape in histogram["layout"]["shapes"] if shape["yref"] == "y domain"] == [1]  # the key

    table = phase_section(run).items[0]
    assert dict(table.rows) == {
        "memorised": ["<= 10", PHASES["memorised"].name],
        "generalised": ["30", PHASES["generalised"].name],
    }
    page = run_report(run, "run")
    assert "Phases of training" in page and "Fourier spectra at the last snapshot (step 40)" in page


def test_a_run_that_never_generalises_is_shown_as_such(tmp_path):
    write_modular_run(tmp_path, [[1]] * 4, [0.1, 0.2, 0.3, 0.98])
    run = read_snapshots(tmp_path)
    assert dict(phase_section(run).items[0].rows)["generalised"][0] == "not by step 40"
    _, accuracy, _, _ = figures(modular_addition_sections(run)[0])
    assert [shape["name"] for shape in accuracy["layout"]["shapes"]] == ["memorised at step <= 10"]


def test_scores_measured_at_only_some_snapshots_are_points(tmp_path):
    summaries = [
        {
            "step": step,
            "task": "T",
            "loss": 1.0,
            "heads": {
                "L0H0": {"prev_token_score": 0.1 * index, "patching_score": None}  # measured (NaN): not sparse
                | ({"zero_ablation_loss": 2.0} if index % 2 == 0 else {})
            },
        }
        for index, step in enumerate(STEPS)
    ]
    sparse = sparse_series(summaries)
    assert sparse["heads"] == {"zero_ablation_loss"}
    _, scores, _ = score_sections(trajectories(summaries), sparse)
    modes = {spec["layout"]["title"]["text"]: spec["data"][0]["mode"] for spec in figures(scores)}
    assert modes == {
        "prev_token_score": "lines+markers",
        "patching_score": "markers",  # no finite value to join: step_lines draws lines only through dense series
        "zero_ablation_loss": "markers",
    }


def test_cross_run_report_and_csv_show_each_runs_phases_and_key_frequencies(tmp_path):
    write_modular_run(tmp_path / "groks", [[2], [2], [1, 3], [1, 3]], [0.1, 0.5, 0.995, 1.0])
    write_modular_run(tmp_path / "stuck", [[], [], [], []], [0.1, 0.2, 0.3, 0.4])
    page, rows = runs_report([tmp_path / "groks", tmp_path / "stuck"], {})
    by_run = {row["run"]: row for row in csv.DictReader(io.StringIO(csv_text(rows)))}
    assert by_run["groks"]["memorised_at"] == "10" and by_run["groks"]["memorised_at_first_snapshot"] == "True"
    assert by_run["groks"]["generalised_at"] == "30" and by_run["groks"]["generalised_at_first_snapshot"] == "False"
    assert by_run["groks"]["key_frequencies"] == "1 3"
    assert by_run["stuck"]["generalised_at"] == "" and by_run["stuck"]["key_frequencies"] == "none"
    assert by_run["stuck"]["generalised_reached"] == "False" and by_run["groks"]["generalised_reached"] == "True"
    assert "Phases of training across runs" in page and "not by step 40" in page
    assert "generalised (1\\u002f2)" in page and "memorised (2\\u002f2)" in page  # plotly's JSON escapes "/"


LONG_STEPS = list(range(0, 1001, 50))


BUMP_STEP = 350  # the probe loss rises 0.3 above its running minimum here, before the phase change


def write_induction_run(run: Path, falls: bool) -> list[float]:
    """In-context loss flat at 0 then (if `falls`) a logistic drop of 3 nats around step 500; the LLC at every
    fourth snapshot only; the probe loss falls from 2 by 0.001 a snapshot, with a bump of 0.3 at BUMP_STEP."""
    in_context = [
        -3.0 / (1 + math.exp(-(step - 500) / 20)) if falls else -0.01 * index for index, step in enumerate(LONG_STEPS)
    ]
    for index, (step, value) in enumerate(zip(LONG_STEPS, in_context)):
        summary = {
            "step": step,
            "task": "InductionModule",
            "loss": 2.0 - 0.001 * index + (0.3 if step == BUMP_STEP else 0.0),
            "in_context": {"first_half_loss": 4.0, "repeated_half_loss": 4.0 + value, "in_context_loss": value},
        }
        if index % 4 == 0:
            summary["learning_coefficient"] = {"llc_mean": 1.0 + index, "llc_std": 0.5}
        write_snapshot(run, step, summary, {})
    return in_context


def test_run_report_draws_the_in_context_phase_change_band_and_llc_points(tmp_path):
    from lit_interp.analysis.phase_change import phase_change
    from lit_interp.report.phase_figures import in_context_section

    in_context = write_induction_run(tmp_path, falls=True)
    run = read_snapshots(tmp_path)
    fall = phase_change(LONG_STEPS, in_context, PHASE_CHANGES["in_context_phase_change"].min_fall)
    assert fall.step == pytest.approx(500, abs=1) and 450 < fall.start < fall.step < fall.end < 550
    loss, llc = figures(in_context_section(run))
    band = next(shape for shape in loss["layout"]["shapes"] if shape["type"] == "rect")
    assert (band["x0"], band["x1"]) == (pytest.approx(fall.start), pytest.approx(fall.end))
    assert values(loss["data"][0]["y"]) == pytest.approx(in_context, abs=1e-6)
    points = llc["data"][0]
    assert points["mode"] == "markers" and values(points["x"]) == LONG_STEPS[::4]
    assert values(points["y"]) == [1.0 + index for index in range(0, len(LONG_STEPS), 4)]
    table = dict(phase_section(run).items[0].rows)
    assert table["in_context_phase_change"][0] == f"{fall.step:.0f} (falls from {fall.start:.0f} to {fall.end:.0f})"
    columns = phase_section(run).items[0].columns
    bump = dict(zip(columns, table["in_context_phase_change"]))
    assert bump["loss bump before it (nats)"] == pytest.approx(0.3 - 0.001) and bump["bump at step"] == BUMP_STEP


def test_cross_run_report_shows_each_runs_phase_change_step(tmp_path):
    write_induction_run(tmp_path / "forms", falls=True)
    write_induction_run(tmp_path / "drifts", falls=False)  # falls by 0.2 nats: less than min_fall, no phase change
    page, rows = runs_report([tmp_path / "forms", tmp_path / "drifts"], {})
    by_run = {row["run"]: row for row in csv.DictReader(io.StringIO(csv_text(rows)))}
    assert float(by_run["forms"]["in_context_phase_change_at"]) == pytest.approx(500, abs=1)
    assert float(by_run["forms"]["in_context_phase_change_relative_width"]) < 0.2
    assert by_run["drifts"]["in_context_phase_change_at"] == ""
    assert "memorised_reached" not in by_run["forms"]  # not measured: no column, not False
    assert "in_context_phase_change (1\\u002f2)" in page and "none (the series falls by 0.2" in page
