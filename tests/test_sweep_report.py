"""The cross-run report: one formation rule with the run report and the sweep, escaped Optuna names, many runs drawn
as a band, event files read as TensorBoard reads them, and a sweep's storage only ever read."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from storages import fingerprint, postgres_server, postgres_url  # noqa: F401 (fixtures)

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


def figure_specs(page: str) -> list[dict]:
    """The plotly figures of a report page, decoded from their JSON script elements."""
    import re

    found = re.findall(r'<script type="application/json" class="figure-spec"[^>]*>(.*?)</script>', page, re.DOTALL)
    return [json.loads(text) for text in found]


def strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in [key, *strings(item)]]
    if isinstance(value, list):
        return [text for item in value for text in strings(item)]
    return []


def write_search(directory: Path, names: list[str], values: list[dict], storage: str | None = None) -> str:
    """A directory as `sweep --space` leaves it: an Optuna study (COMPLETE trials with these parameters), sweep.json,
    and a run with snapshots per trial."""
    import optuna

    directory.mkdir(parents=True)
    storage = storage or f"sqlite:///{(directory / 'optuna.db').resolve()}"
    study = optuna.create_study(storage=storage, study_name="search")
    choices = sorted({v[names[1]] for v in values})
    distributions = {
        names[0]: optuna.distributions.FloatDistribution(0.0, 1.0),
        names[1]: optuna.distributions.CategoricalDistribution(choices),
    }
    for number, params in enumerate(values):
        user_attrs = {"note": '<img src=x onerror="alert(1)">'}
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=distributions, value=float(number), user_attrs=user_attrs
            )
        )
        write_run(directory / f"trial_{number:04d}" / "lightning_logs" / "version_0", summary(10, L0H0=0.1 * number))
    space = {name: {"type": "float", "low": 0.0, "high": 1.0} for name in names}
    info = {"study_name": "search", "storage": storage, "space": space, "objective": "val/loss"}
    (directory / "sweep.json").write_text(json.dumps(info | {"direction": "minimize"}))
    return storage


def test_optuna_parameter_names_and_values_reach_the_report_escaped():
    from lit_interp.cli import main

    bold, link = "<b>bold</b>", '<a href="https://example.com/x">link</a>'
    values = [{bold: 0.1 * n, link: ["<i>c</i>", "plain"][n % 2]} for n in range(6)]
    write_search(Path("sweep"), [bold, link], values)
    main(["analyze", "--runs", "sweep"])
    page = Path("sweep/runs_report/report.html").read_text()
    specs = figure_specs(page)
    shown = [text for spec in specs for text in strings(spec)]
    assert any("&lt;b&gt;bold&lt;/b&gt;" in text for text in shown)  # the names reached Optuna's plots, escaped
    assert any("&lt;a href=" in text for text in shown) and any("&lt;i&gt;c&lt;/i&gt;" in text for text in shown)
    for payload in ("<b>", '<a href="https', "<i>", "<img"):
        assert not [text for text in shown if payload in text], payload
        assert payload not in page  # nor anywhere in the page's HTML (its own links are to its sections: href="#...")


def test_many_runs_are_drawn_as_a_band_and_every_run_is_in_the_csv():
    from lit_interp.cli import main
    from lit_interp.report.runs import MAX_RUNS_DRAWN

    count = MAX_RUNS_DRAWN + 10
    for number in range(count):
        run = write_run(Path("runs") / f"run_{number:03d}", summary(10, L0H0=0.2), summary(20, L0H0=0.5 + number / 100))
        rows = "".join(f"{step},{1.0 / step + number / 1000}\n" for step in range(10, 110, 10))
        (run / "metrics.csv").write_text("step,val/loss\n" + rows)
    main(["analyze", "--runs", "runs", "--out", "report"])
    page = Path("report/report.html").read_text()
    curve = next(spec for spec in figure_specs(page) if "val/loss" in json.dumps(spec.get("layout", {})))
    assert [trace.get("name") for trace in curve["data"]] == [None, "10-90 % of runs", "median across runs"]
    medians = curve["data"][2]
    assert medians["x"] == list(range(10, 110, 10))
    assert f"{count} runs, more than {MAX_RUNS_DRAWN}: each curve is the median" in page
    rows = list(csv.DictReader(Path("report/runs.csv").open()))
    assert len(rows) == count and sorted(row["run"] for row in rows) == [f"run_{n:03d}" for n in range(count)]


def write_records(path: Path, events: list) -> None:
    """A TFRecord event file as TensorFlow writes it (with the CRCs TensorBoard checks)."""
    import struct

    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    with path.open("wb") as file:
        for event in events:
            data = event.SerializeToString()
            header = struct.pack("<Q", len(data))
            file.write(
                header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))
            )


def scalar(step: int, tag: str, value: float):
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    return Event(step=step, summary=Summary(value=[Summary.Value(tag=tag, simple_value=value)]))


def test_event_files_read_as_tensorboard_reads_them(tmp_path):
    """lit_interp's record reader against TensorBoard's EventAccumulator: a restart marked by SessionLog START, an
    old file's out-of-order steps, non-scalar events, and a truncated end."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
    from tensorboard.compat.proto.event_pb2 import Event, SessionLog
    from torch.utils.tensorboard import SummaryWriter

    from lit_interp.runlogs import event_file_scalars

    writer = SummaryWriter(log_dir=str(tmp_path / "new"))
    for step in range(0, 50, 5):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
        writer.add_scalar("val/acc", step / 50, step)
    writer.add_text("config", "<b>text</b>", 0)
    writer.add_histogram("weights", np.arange(10.0), 10)
    writer.file_writer.add_event(Event(step=20, session_log=SessionLog(status=SessionLog.START)))
    for step in range(20, 40, 5):  # a restart from step 20: every tag's points from step 20 on are dropped
        writer.add_scalar("train/loss", 2.0 + step, step)
    writer.close()
    (new,) = (tmp_path / "new").glob("events.out.tfevents.*")
    old = tmp_path / "events.out.tfevents.old"  # no file_version: out-of-order steps purge their tags
    steps = [0, 5, 10, 15, 20, 10, 15]
    write_records(old, [scalar(step, "a", float(n)) for n, step in enumerate(steps)] + [scalar(30, "b", 9.0)])
    truncated = tmp_path / "events.out.tfevents.truncated"
    truncated.write_bytes(new.read_bytes()[:-7])
    for path in (new, old, truncated):
        accumulator = EventAccumulator(str(path), size_guidance={SCALARS: 0}).Reload()
        expected = {
            tag: {event.step: event.value for event in accumulator.Scalars(tag)} for tag in accumulator.Tags()[SCALARS]
        }
        assert event_file_scalars(path) == expected, path.name
    losses = event_file_scalars(new)["train/loss"]
    assert sorted(losses) == list(range(0, 40, 5)) and [losses[step] for step in (20, 35)] == [22.0, 37.0]
    assert sorted(event_file_scalars(new)["val/acc"]) == list(range(0, 20, 5))
    assert event_file_scalars(old) == {"a": {0: 0.0, 5: 1.0, 10: 5.0, 15: 6.0}, "b": {30: 9.0}}


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_analyze_runs_never_creates_a_missing_storage(tmp_path, capsys, kind):
    from lit_interp.cli import main

    missing = tmp_path / "elsewhere" / ("study.journal" if kind == "journal" else "study.db")
    missing.parent.mkdir()
    write_run(tmp_path / "sweep" / "trial_0000" / "lightning_logs" / "version_0", summary(10, L0H0=0.5))
    url = f"journal:{missing}" if kind == "journal" else f"sqlite:///{missing}"
    (tmp_path / "sweep" / "sweep.json").write_text(json.dumps({"study_name": "s", "storage": url}))
    before = fingerprint(tmp_path)
    with pytest.raises(SystemExit) as exit:
        main(["analyze", "--runs", "sweep"])
    message = f"--runs sweep: its study's storage {missing} does not exist; copy it with the sweep directory"
    assert (exit.value.code, capsys.readouterr().err) == (2, f"lit_interp: error: {message}\n")
    assert fingerprint(tmp_path) == before


def test_analyze_runs_of_a_copied_sweep_reads_its_database_where_it_now_is(tmp_path):
    import shutil

    from lit_interp.cli import main

    write_search(tmp_path / "original", ["a", "b"], [{"a": 0.1 * n, "b": ["x", "y"][n % 2]} for n in range(3)])
    shutil.copytree(tmp_path / "original", tmp_path / "copy")
    (tmp_path / "original" / "optuna.db").unlink()  # the copy's sweep.json still names this file
    before = fingerprint(tmp_path)
    main(["analyze", "--runs", "copy"])
    after = fingerprint(tmp_path)
    assert not (tmp_path / "original" / "optuna.db").exists()  # never created at the old location
    assert {
        path: state for path, state in after.items() if "runs_report" not in path
    } == before  # the copy's db read only
    rows = list(csv.DictReader((tmp_path / "copy" / "runs_report" / "runs.csv").open()))
    assert [(row["trial"], row["state"]) for row in rows] == [("0", "COMPLETE"), ("1", "COMPLETE"), ("2", "COMPLETE")]


def test_analyze_runs_refuses_a_database_without_the_study_and_leaves_it_as_it_was(tmp_path, capsys):
    import sqlite3

    from lit_interp.cli import main

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
    write_run(tmp_path / "sweep" / "trial_0000" / "lightning_logs" / "version_0", summary(10, L0H0=0.5))
    (tmp_path / "sweep" / "sweep.json").write_text(json.dumps({"study_name": "s", "storage": f"sqlite:///{other}"}))
    before = fingerprint(tmp_path)
    with pytest.raises(SystemExit) as exit:
        main(["analyze", "--runs", "sweep"])
    message = f"--runs sweep: sqlite:///{other} holds no Optuna study (its tables are missing)"  # its URL as written
    assert (exit.value.code, capsys.readouterr().err) == (2, f"lit_interp: error: {message}; is that the storage?\n")
    assert fingerprint(tmp_path) == before


def test_analyze_runs_creates_no_table_in_a_postgresql_database(postgres_url, capsys):  # noqa: F811
    import sqlalchemy

    from lit_interp.cli import main

    write_run(Path("sweep/trial_0000/lightning_logs/version_0"), summary(10, L0H0=0.5))
    Path("sweep/sweep.json").write_text(json.dumps({"study_name": "s", "storage": postgres_url}))
    with pytest.raises(SystemExit) as exit:
        main(["analyze", "--runs", "sweep"])
    message = f"--runs sweep: {postgres_url} holds no Optuna study (its tables are missing); is that the storage?"
    assert (exit.value.code, capsys.readouterr().err) == (2, f"lit_interp: error: {message}\n")
    engine = sqlalchemy.create_engine(postgres_url)
    assert sqlalchemy.inspect(engine).get_table_names() == []  # Optuna's tables were not made
    engine.dispose()
