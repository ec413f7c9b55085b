"""The cross-run report's data (phase-change steps, findings counted across runs) and the crossing objective."""

from __future__ import annotations

import json
from pathlib import Path

from lit_interp.report.runs import Run, crossing_step, findings, parse_thresholds


def summary(step: int, **heads: float) -> dict:
    return {"step": step, "heads": {head: {"prev_token_score": value} for head, value in heads.items()}}


def test_crossing_step_is_the_first_snapshot_at_or_above_the_threshold():
    summaries = [summary(100, L0H0=0.1, L1H0=0.6), summary(200, L0H0=0.49, L1H0=0.4), summary(300, L0H0=0.5, L1H0=0.7)]
    assert crossing_step(summaries, "L0H0", "prev_token_score", 0.5) == 300
    assert crossing_step(summaries, "L1H0", "prev_token_score", 0.5) == 100
    assert crossing_step(summaries, "L0H0", "prev_token_score", 0.9) is None
    assert crossing_step(summaries, "L2H0", "prev_token_score", 0.5) is None


def test_findings_count_the_runs_whose_last_snapshot_reaches_the_threshold():
    def run(name: str, *snapshots: dict) -> Run:
        return Run(name, Path(name), {}, {}, {}, list(snapshots))

    runs = [run("a", summary(100, L0H0=0.2, L1H0=0.9)), run("b", summary(100, L0H0=0.6, L1H0=0.8)), run("c")]
    rows = {(row["head"], row["score"]): (row["runs"], row["of"]) for row in findings(runs, parse_thresholds([]))}
    assert rows == {("L1H0", "prev_token_score"): (2, 2), ("L0H0", "prev_token_score"): (1, 2)}
    strict = findings(runs, parse_thresholds(["prev_token_score=0.85"]))
    assert strict[0]["finding"] == "L1H0 is a previous-token head (prev_token_score >= 0.85) in 1/2 runs"


def test_crossing_objective_is_the_step_a_head_reaches_the_threshold(tmp_path):
    from lit_interp.sweep import objective_value

    (tmp_path / "analysis").mkdir()
    for snapshot in (summary(10, L1H0=0.2), summary(20, L1H0=0.95), summary(30, L1H0=0.97)):
        (tmp_path / "analysis" / f"step_{snapshot['step']:07d}.json").write_text(json.dumps(snapshot))
    assert objective_value("crossing:prev_token_score:L1H0:0.9", tmp_path) == (20.0, None)
    assert objective_value("crossing:prev_token_score:L1H0:0.99", tmp_path) == (float("inf"), None)  # never: worst
    value, problem = objective_value("val/loss", tmp_path)
    assert value != value and problem == f"run {tmp_path} never logged val/loss; pick a logged metric such as val/loss"


def test_reach_objective_is_the_first_step_a_scalar_gets_there(tmp_path):
    from lit_interp.sweep import objective_value

    (tmp_path / "metrics.csv").write_text("step,val/acc,val/loss\n99,0.5,2.0\n199,0.99,0.1\n299,0.995,0.05\n")
    assert objective_value("reach:val/acc>=0.99", tmp_path) == (199.0, None)
    assert objective_value("reach:val/loss<=0.06", tmp_path) == (299.0, None)
    assert objective_value("reach:val/acc>=0.999", tmp_path) == (float("inf"), None)
    assert objective_value("val/acc", tmp_path) == (0.995, None)
