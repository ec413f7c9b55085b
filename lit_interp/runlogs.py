"""Scalars a run logged during training, read from its TensorBoard event files and its CSVLogger metrics.csv."""

from __future__ import annotations

import csv
import math
from pathlib import Path

Series = tuple[list[int], list[float]]


def read_scalars(run: Path, skip_prefixes: tuple[str, ...] = ("analysis/",)) -> dict[str, Series]:
    """Every scalar tag of the run as (steps, values), from event files and metrics.csv (events first on a clash).

    Tags under `skip_prefixes` are left out (the analysis scalars repeat the snapshots). A file
    that cannot be read is skipped: the curves are a convenience, not worth failing a report for.
    """
    scalars = read_csv_metrics(run)
    scalars.update(read_event_files(run))
    return {tag: series for tag, series in sorted(scalars.items()) if not tag.startswith(skip_prefixes)}


def read_event_files(run: Path) -> dict[str, Series]:
    """Scalars from `events.out.tfevents.*` directly in `run` (the TensorBoardLogger's version directory)."""
    files = sorted(path for path in run.glob("events.out.tfevents.*") if path.is_file())  # never a FIFO: it blocks
    if not files:
        return {}
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    scalars: dict[str, dict[int, float]] = {}
    for file in files:  # a resumed run appends a new file; a later file's value wins at the same step
        try:
            accumulator = EventAccumulator(str(file), size_guidance={SCALARS: 0}).Reload()
        except Exception:  # a truncated or foreign file: tensorboard raises many kinds
            continue
        for tag in accumulator.Tags().get(SCALARS, []):
            scalars.setdefault(tag, {}).update({event.step: float(event.value) for event in accumulator.Scalars(tag)})
    return {tag: (sorted(points), [points[step] for step in sorted(points)]) for tag, points in scalars.items()}


def read_csv_metrics(run: Path) -> dict[str, Series]:
    """Scalars from a CSVLogger's `metrics.csv` (one column per metric, a `step` column, blanks where not logged)."""
    path = run / "metrics.csv"
    if not path.is_file():
        return {}
    scalars: dict[str, dict[int, float]] = {}
    try:
        with path.open(newline="") as file:
            for row in csv.DictReader(file):
                step = parse_float(row.get("step"))
                if step is None:
                    continue
                for tag, text in row.items():
                    value = parse_float(text)
                    if tag and tag != "step" and value is not None:
                        scalars.setdefault(tag, {})[int(step)] = value
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    return {tag: (sorted(points), [points[step] for step in sorted(points)]) for tag, points in scalars.items()}


def parse_float(text: str | None) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
