"""Scalars a run logged during training, read from its TensorBoard event files and its CSVLogger metrics.csv."""

from __future__ import annotations

import csv
import math
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

Series = tuple[list[int], list[float]]
MAX_RECORD_BYTES = 2**28  # an event record this long is not one TensorBoard wrote: the file is damaged from there


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
    scalars: dict[str, dict[int, float]] = {}
    for file in sorted(run.glob("events.out.tfevents.*")):  # a resumed run appends a new file; its value wins
        for tag, points in event_file_scalars(file).items():
            scalars.setdefault(tag, {}).update(points)
    return {tag: (sorted(points), [points[step] for step in sorted(points)]) for tag, points in scalars.items()}


def tf_records(path: Path) -> Iterator[bytes]:
    """The records of a TFRecord file (8-byte length, its 4-byte CRC, the data, its CRC), up to a truncated end.

    The CRCs are not checked (pure Python would make reading hundreds of runs take minutes); a damaged record is
    caught by the protobuf parse, and a cut-off one ends the file.
    """
    if not stat.S_ISREG(path.stat().st_mode):
        return  # a FIFO or device would block or never end
    with path.open("rb") as file:
        while len(header := file.read(12)) == 12:
            (length,) = struct.unpack("<Q", header[:8])
            if length > MAX_RECORD_BYTES:
                return
            data = file.read(length)
            if len(data) < length or len(file.read(4)) < 4:
                return
            yield data


def event_file_scalars(path: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of one event file's scalar summaries, purged as TensorBoard's EventAccumulator purges
    (a later value at a step wins): in a file of version 2 or later a SessionLog START drops every point at or
    after its step; in an older file a summary at a step below the latest drops its tags' points from that step."""
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto.event_pb2 import Event, SessionLog

    scalars: dict[str, dict[int, float]] = {}
    version, latest = None, -1
    try:
        for record in tf_records(path):
            event = Event.FromString(record)
            if event.HasField("file_version"):
                version = file_version(event.file_version)
            if version is not None and version >= 2:
                if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                    purge(scalars, scalars, event.step)
            elif event.step < latest and event.HasField("summary"):
                purge(scalars, {value.tag for value in event.summary.value}, event.step)
            else:
                latest = event.step
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, {})[event.step] = float(value.simple_value)
    except (OSError, DecodeError):  # unreadable from here on: keep what was read
        pass
    return {tag: points for tag, points in scalars.items() if points}


def file_version(text: str) -> float | None:
    try:
        return float(text.split("brain.Event:")[-1])
    except ValueError:
        return None


def purge(scalars: dict[str, dict[int, float]], tags, step: int) -> None:
    """Drop the tags' points at or after `step` (a restart from there)."""
    for tag in tags:
        points = scalars.get(tag, {})
        for stale in [s for s in points if s >= step]:
            del points[stale]


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
