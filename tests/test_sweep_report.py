"""Formation ("a head formed at step s") has one rule: the run report, the cross-run report and the sweep agree."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from lit_interp.commands.analyze import parse_thresholds
from lit_interp.formation import Formation, formation
from lit_interp.report.run import formation_section, trajectories
from lit_interp.report.runs_table import RunRecord, collect, csv_rows, findings
from lit_interp.snapshots import RunSnapshots, read_snapshots


def summary(step: int, **heads: float) -> dict:
    scores = {head: {"prev_token_score": value} for head, value in heads.items()}
    return {"step": step, "task": "T", "loss": 1.0, "heads": scores}


def write_run(run: Path, *summaries: dict) -> Path:
    (run / "analysis").mkdir(parents=True)
    for snapshot in summaries:
        (run / "analysis" / f"step_{snapshot['step']:07d}.json").write_text(json.dumps(snapshot))
    return run


def test_formation_is_the_first_snapshot_at_or_above_the_threshold():
    steps = [100, 200, 300]
    assert formation(steps, [0.1, 0.49, 0.5], 0.5) == Formation(300, at_first_snapshot=False)
    assert formation(steps, [0.6, 0.4, 0.7], 0.5) == Formation(100, at_first_snapshot=True)  # formed at or before 100
    assert formation(steps, [0.1, float("nan"), None], 0.5) is None
    assert str(formation(steps, [0.6, 0.4, 0.7], 0.5)) == "<= 100"


def test_the_two_reports_and_the_sweep_give_the_same_formation_steps(tmp_path):
    from lit_interp.commands.sweep.objective import objective_value

    run = write_run(
        tmp_path / "runs" / "a",
        summary(10, L0H0=0.6, L1H0=0.2),
        summary(20, L0H0=0.3, L1H0=0.95),
        summary(30, L1H0=0.97),
    )
    thresholds = parse_thresholds([])
    table = formation_section(trajectories(read_snapshots(run).summaries)).items[0]
    run_report = {row: dict(zip(table.columns, values)) for row, values in table.rows}
    runs, parameters = collect([tmp_path / "runs"])
    cross_run = csv_rows(runs, parameters, thresholds)[0]
    assert (
        str(run_report["L1H0"]["prev_token_score >= 0.5"]) == "20"
        and cross_run["L1H0/prev_token_score/formed_at"] == 20
    )
    assert str(run_report["L0H0"]["prev_token_score >= 0.5"]) == "<= 10"
    assert cross_run["L0H0/prev_token_score/formed_at"] == 10
    assert cross_run["L0H0/prev_token_score/formed_at_first_snapshot"] is True
    assert objective_value("crossing:prev_token_score:L1H0:0.5", run) == (20.0, None)
    assert objective_value("crossing:prev_token_score:L0H0:0.5", run) == (10.0, None)


def test_findings_count_the_runs_whose_last_snapshot_reaches_the_threshold(tmp_path):
    def run(name: str, *summaries: dict) -> RunRecord:
        snapshots = read_snapshots(write_run(tmp_path / name, *summaries)) if summaries else RunSnapshots(tmp_path)
        return RunRecord(name, Path(name), {}, {}, {}, snapshots)

    runs = [run("a", summary(100, L0H0=0.2, L1H0=0.9)), run("b", summary(100, L0H0=0.6, L1H0=0.8)), run("c")]
    rows = {(row["head"], row["score"]): (row["runs"], row["of"]) for row in findings(runs, parse_thresholds([]))}
    assert rows == {("L1H0", "prev_token_score"): (2, 2), ("L0H0", "prev_token_score"): (1, 2)}
    strict = findings(runs, parse_thresholds(["prev_token_score=0.85"]))
    assert strict[0]["finding"] == "L1H0 is a previous-token head (prev_token_score >= 0.85) in 1/2 runs"


def test_a_damaged_snapshot_is_listed_in_the_cross_run_report_not_skipped_silently(tmp_path):
    run = write_run(tmp_path / "runs" / "a", summary(10, L0H0=0.6), summary(20, L0H0=0.7))
    (run / "analysis" / "step_0000030.json").write_text("{cut off")
    runs, parameters = collect([tmp_path / "runs"])
    assert runs[0].snapshots.steps == [10, 20] and [d.path.name for d in runs[0].snapshots.damaged] == [
        "step_0000030.json"
    ]
    row = csv_rows(runs, parameters, parse_thresholds([]))[0]
    assert "step_0000030.json" in row["damaged_snapshots"] and "not valid JSON" in row["damaged_snapshots"]


def test_the_crossing_objective_fails_on_a_damaged_snapshot(tmp_path):
    from lit_interp.commands.sweep.objective import objective_value

    run = write_run(tmp_path / "a", summary(10, L1H0=0.2), summary(20, L1H0=0.95))
    (run / "analysis" / "step_0000015.json").write_text(json.dumps({"step": 15}))  # no task, no loss
    value, problem = objective_value("crossing:prev_token_score:L1H0:0.5", run)
    assert value != value and "step_0000015.json has task None, not a string" in problem


def test_crossing_objective_is_the_step_a_head_reaches_the_threshold(tmp_path):
    from lit_interp.commands.sweep.objective import objective_value

    write_run(tmp_path, summary(10, L1H0=0.2), summary(20, L1H0=0.95), summary(30, L1H0=0.97))
    assert objective_value("crossing:prev_token_score:L1H0:0.9", tmp_path) == (20.0, None)
    assert objective_value("crossing:prev_token_score:L1H0:0.99", tmp_path) == (float("inf"), None)  # never: worst
    value, problem = objective_value("val/loss", tmp_path)
    assert value != value and problem == f"run {tmp_path} never logged val/loss; pick a logged metric such as val/loss"


def test_reach_objective_is_the_first_step_a_scalar_gets_there(tmp_path):
    from lit_interp.commands.sweep.objective import objective_value

    (tmp_path / "metrics.csv").write_text("step,val/acc,val/loss\n99,0.5,2.0\n199,0.99,0.1\n299,0.995,0.05\n")
    assert objective_value("reach:val/acc>=0.99", tmp_path) == (199.0, None)
    assert objective_value("reach:val/loss<=0.06", tmp_path) == (299.0, None)
    assert objective_value("reach:val/acc>=0.999", tmp_path) == (float("inf"), None)
    assert objective_value("val/acc", tmp_path) == (0.995, None)


def test_runs_csv_holds_every_row(tmp_path):
    from lit_interp.report.runs_table import csv_text

    text = csv_text([{"run": "a", "x": 1.5}, {"run": "b", "y": None}])
    assert list(csv.DictReader(text.splitlines())) == [
        {"run": "a", "x": "1.5", "y": ""},
        {"run": "b", "x": "", "y": ""},
    ]
