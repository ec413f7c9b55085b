"""Snapshot summaries as logger scalars: bookkeeping left out, NaN logged as NaN whether fresh or relogged on resume."""

from __future__ import annotations

import math

import torch

from lit_interp.loggers import flatten_scalars, log_scalars
from lit_interp.snapshots import read_snapshot, write_snapshot

SUMMARY = {
    "step": 7,
    "task": "T",
    "loss": 1.5,
    "metrics": {"acc": math.nan},
    "heads": {"L0H0": {"prev_token_score": 0.25, "patching_score": math.nan}},
    "layers": {"0": {"probe_c_r2": math.nan}},
    "probes": {"sequences": 2048, "folds": 5, "features": 16, "reason": "too few rows"},
    "fourier": {"embed_gini": 0.5, "key_frequencies": [1, 4]},
}


def test_probe_bookkeeping_is_not_a_scalar_and_measurements_are():
    scalars = flatten_scalars(SUMMARY)
    assert not [key for key in scalars if key.startswith("analysis/probes/")]
    assert scalars["analysis/loss"] == 1.5
    assert scalars["analysis/prev_token_score/L0H0"] == 0.25
    assert scalars["analysis/fourier/embed_gini"] == 0.5
    assert "analysis/fourier/key_frequencies" not in scalars  # a list, not a scalar


def test_nan_is_logged_as_nan_fresh_and_after_the_json_round_trip(tmp_path):
    fresh = flatten_scalars(SUMMARY)
    path = write_snapshot(tmp_path, 7, SUMMARY, {"x": torch.zeros(1)})
    assert '"patching_score": null' in path.read_text()  # strict JSON: NaN stored as null
    relogged = flatten_scalars(read_snapshot(path).summary)
    assert set(relogged) == set(fresh)
    for key in ("analysis/metrics/acc", "analysis/patching_score/L0H0", "analysis/probe_c_r2/L0"):
        assert math.isnan(fresh[key]) and math.isnan(relogged[key])
    assert relogged["analysis/prev_token_score/L0H0"] == fresh["analysis/prev_token_score/L0H0"]


def test_relogged_nan_reaches_tensorboard_and_a_resumed_csv_as_nan(tmp_path):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lit_interp.loggers import continue_csv_metrics

    relogged = flatten_scalars(read_snapshot(write_snapshot(tmp_path, 7, SUMMARY, {})).summary)
    board = TensorBoardLogger(tmp_path, name="tb", version=0)
    log_scalars([board], relogged, 7)
    board.finalize("success")
    events = EventAccumulator(board.log_dir, size_guidance={"scalars": 0}).Reload()
    assert math.isnan(events.Scalars("analysis/patching_score/L0H0")[0].value)

    first = CSVLogger(tmp_path, name="csv", version=0)
    log_scalars([first], relogged, 7)
    first.finalize("success")
    resumed = CSVLogger(tmp_path, name="csv", version=0)
    continue_csv_metrics(resumed, None)
    log_scalars([resumed], {"analysis/loss": 1.0}, 8)
    resumed.finalize("success")
    import csv

    rows = list(csv.DictReader(open(f"{resumed.log_dir}/metrics.csv", newline="")))
    assert [row["step"] for row in rows] == ["7", "8"]
    assert math.isnan(float(rows[0]["analysis/patching_score/L0H0"]))
    assert float(rows[0]["analysis/prev_token_score/L0H0"]) == 0.25
