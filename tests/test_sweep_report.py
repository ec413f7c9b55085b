"""The cross-run report's data: phase-change steps and the findings counted across runs."""

from __future__ import annotations

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
