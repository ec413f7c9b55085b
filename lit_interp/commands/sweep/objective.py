"""A trial's objective value, read from its run: a logged scalar, the step it reaches a value, or a formation step."""

from __future__ import annotations

import re
from pathlib import Path

CROSSING = re.compile(r"crossing:(?P<score>\w+):(?P<head>L\d+H\d+):(?P<threshold>[-+0-9.eE]+)")
REACH = re.compile(r"reach:(?P<tag>[\w/.-]+)(?P<direction>>=|<=)(?P<target>[-+0-9.eE]+)")
NAN, INF = float("nan"), float("inf")


def formation_value(run: Path, score: str, head: str, threshold: float) -> tuple[float, str | None]:
    """The snapshot step at which `head`'s `score` first reaches `threshold` (lit_interp.formation); inf: never."""
    from lit_interp.errors import ConfigError
    from lit_interp.formation import formation
    from lit_interp.snapshots import read_snapshots

    try:
        snapshots = read_snapshots(run, on_damaged="raise")  # a formation step read past a damaged file could be wrong
    except ConfigError as error:
        return NAN, str(error)
    if not snapshots:
        return NAN, f"run {run} wrote no analysis snapshots; keep the AnalysisSnapshots callback for this objective"
    values = [summary.get("heads", {}).get(head, {}).get(score) for summary in snapshots.summaries]
    formed = formation(snapshots.steps, values, threshold)
    return (INF if formed is None else float(formed.step)), None


def objective_value(objective: str, run: Path) -> tuple[float, str | None]:
    """(value, None), or (nan, why there is none): a scalar's last logged value, the step at which a scalar
    first reaches a value, or the snapshot step at which a head's score first reaches a threshold (inf: never)."""
    from lit_interp import runlogs

    if match := CROSSING.fullmatch(objective):
        return formation_value(run, match["score"], match["head"], float(match["threshold"]))
    reach = REACH.fullmatch(objective)
    tag = reach["tag"] if reach else objective
    steps, values = runlogs.read_scalars(run, skip_prefixes=()).get(tag, ([], []))
    if not values:
        return NAN, f"run {run} never logged {tag}; pick a logged metric such as val/loss"
    if reach is None:
        return values[-1], None
    target, above = float(reach["target"]), reach["direction"] == ">="
    reached = (step for step, value in zip(steps, values) if (value >= target if above else value <= target))
    return float(next(reached, INF)), None
