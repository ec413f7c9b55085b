"""`sweep`: seed sweeps, two workers on one storage, pruning, a failing trial, resume after a kill; `analyze --runs`."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from conftest import CONFIGS, TINY
from storages import fingerprint

from lit_interp.cli import main
from lit_interp.commands.sweep.definition import build_sweep
from lit_interp.commands.sweep.study import start
from lit_interp.runlogs import read_scalars
from lit_interp.sweep_pruning import OptunaPruning

CONFIG = str(CONFIGS / "prev_token_digits.yaml")
# 4 steps, validation and a checkpoint every 2, small analysis snapshots: a trial is mostly process start-up.
SNAPSHOTS = {"every_n_train_steps": 2, "probe_batch_size": 8, "hook_mean_ablation": False, "log_images": False}
SHORT = [
    *TINY["prev_token_digits"],
    "--trainer.max_steps=4",
    "--trainer.val_check_interval=2",
    "--checkpoint.every_n_train_steps=2",
    "--trainer.callbacks="
    + json.dumps([{"class_path": "lit_interp.callbacks.AnalysisSnapshots", "init_args": SNAPSHOTS}]),
]


def trials(directory: Path, storage: str | None = None, name: str | None = None) -> list[optuna.trial.FrozenTrial]:
    from lit_interp.optuna_storage import open_storage

    storage = storage or f"sqlite:///{(directory / 'optuna.db').resolve()}"
    return optuna.load_study(study_name=name or directory.resolve().name, storage=open_storage(storage)).get_trials()


def sweep_command(directory: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "lit_interp", "sweep", directory, "--config", CONFIG, *args]


def tensorboard_hparams(run: Path) -> dict[str, float | str]:
    """The hyperparameters a run shows in TensorBoard's hparams tab."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    accumulator = EventAccumulator(str(run), size_guidance={"tensors": 0}).Reload()
    raw = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    values = plugin_data_pb2.HParamsPluginData.FromString(raw).session_start_info.hparams
    return {
        key: value.number_value if value.HasField("number_value") else value.string_value
        for key, value in values.items()
    }


def fits_started(trial_directory: Path) -> int:
    """How many times a fit ran in this trial directory: each attempt appends its stderr."""
    return (trial_directory / "stderr.log").read_text().count("`Trainer.fit` stopped")


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory) -> tuple[Path, list[str]]:
    """Two workers (one running 2 trials at a time) sharing one 2-seed sweep's default SQLite storage; their outputs."""
    directory = tmp_path_factory.mktemp("sweeps") / "seeds"
    command = sweep_command(str(directory), "--seeds", "0,1", *SHORT)
    workers = [subprocess.Popen(command + jobs, stdout=subprocess.PIPE, text=True) for jobs in (["--jobs", "2"], [])]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0]
    return directory, outputs


def test_seed_sweep_writes_one_run_per_seed_and_a_complete_study(seed_sweep):
    directory, _ = seed_sweep
    found = trials(directory)
    assert [(t.number, t.state.name, t.params) for t in found] == [
        (0, "COMPLETE", {"seed": 0}),
        (1, "COMPLETE", {"seed": 1}),
    ]
    for trial in found:
        run = directory / f"trial_{trial.number:04d}" / "lightning_logs" / "version_0"
        config = (run / "config.yaml").read_text()
        assert f"seed_everything: {trial.number}\n" in config and f"  seed: {trial.number}\n" in config
        assert (run / "checkpoints" / "step_0000004.ckpt").is_file()
        assert sorted(p.name for p in (run / "analysis").glob("*.json")) == ["step_0000002.json", "step_0000004.json"]
        assert trial.value == read_scalars(run)["val/loss"][1][-1]  # the objective: the last val/loss logged
        assert trial.user_attrs["run_dir"] == f"trial_{trial.number:04d}/lightning_logs/version_0"
        assert tensorboard_hparams(run)["data/seed"] == trial.number  # the swept value in TensorBoard's hparams tab
    assert found[0].value != found[1].value  # different seeds, different runs
    assert json.loads((directory / "sweep.json").read_text())["seeds"] == [0, 1]


def test_two_workers_share_the_trials_without_running_one_twice(seed_sweep):
    directory, outputs = seed_sweep
    started = sorted(line.split()[1] for output in outputs for line in output.splitlines() if " started: " in line)
    assert started == ["0", "1"]  # each trial started by exactly one worker, once
    assert all(fits_started(directory / f"trial_{n:04d}") == 1 for n in range(2))


def test_runs_report_of_a_sweep_writes_the_page_and_one_csv_row_per_run(seed_sweep, tmp_path):
    directory, _ = seed_sweep
    main(["analyze", "--runs", str(directory), "--out", "report", "--threshold", "prev_token_score=0.01"])
    page = Path("report/report.html").read_text()
    assert Path("report/report.html").stat().st_size < 10_000_000
    assert "Findings across runs" in page and "When each circuit forms" in page and "trial_0001/version_0" in page
    rows = list(csv.DictReader(Path("report/runs.csv").open()))
    studied = {
        t.number: t for t in optuna.load_study(study_name="seeds", storage=f"sqlite:///{directory}/optuna.db").trials
    }
    assert [row["run"] for row in rows] == ["trial_0000/version_0", "trial_0001/version_0"]
    for number, row in enumerate(rows):
        last = json.loads(
            (directory / f"trial_{number:04d}/lightning_logs/version_0/analysis/step_0000004.json").read_text()
        )
        assert (row["trial"], row["state"], row["seed_everything"]) == (str(number), "COMPLETE", str(number))
        assert float(row["objective"]) == pytest.approx(studied[number].value) == pytest.approx(float(row["val/loss"]))
        assert float(row["L0H0/prev_token_score"]) == pytest.approx(last["heads"]["L0H0"]["prev_token_score"])
        first = json.loads(
            (directory / f"trial_{number:04d}/lightning_logs/version_0/analysis/step_0000002.json").read_text()
        )
        assert row["L0H0/prev_token_score/formed_at"] == (
            "2" if first["heads"]["L0H0"]["prev_token_score"] >= 0.01 else "4"
        )


def test_runs_report_of_run_directories_needs_out_and_labels_each_run(seed_sweep, capsys):
    directory, _ = seed_sweep
    runs = [str(directory / f"trial_{n:04d}/lightning_logs/version_0") for n in range(2)]
    with pytest.raises(SystemExit):
        main(["analyze", "--runs", *runs])
    assert "--runs with several directories needs --out DIR" in capsys.readouterr().err
    main(["analyze", "--runs", *runs, "--out", "two"])
    rows = list(csv.DictReader(Path("two/runs.csv").open()))
    assert [row["run"] for row in rows] == ["trial_0000/version_0", "trial_0001/version_0"]
    assert [row["data.init_args.seed"] for row in rows] == ["0", "1"] and "trial" not in rows[0]


def test_pruning_callback_stops_a_trial_worse_than_the_median(tmp_path):
    storage = f"sqlite:///{tmp_path / 'prune.db'}"
    study = optuna.create_study(study_name="prune", storage=storage)
    for _ in range(5):  # MedianPruner's startup trials, each at val/loss 1.0 at step 10
        trial = study.ask()
        trial.report(1.0, 10)
        study.tell(trial, 1.0)
    for value, pruned in ((0.5, False), (3.0, True)):
        number = study.ask().number
        trainer = SimpleNamespace(
            sanity_checking=False,
            is_global_zero=True,
            global_step=10,
            should_stop=False,
            callback_metrics={"val/loss": torch.tensor(value)},
        )
        OptunaPruning(storage, "prune", number).on_validation_end(trainer, None)
        assert trainer.should_stop is pruned
        assert study.trials[number].intermediate_values == {10: value}
        assert study.trials[number].user_attrs.get("pruned_at_step") == (10 if pruned else None)


@pytest.mark.slow
def test_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    (tmp_path / "space.yaml").write_text("model.init_args.lr: {type: categorical, choices: [0.001, -1.0]}\n")
    storage = f"journal:{tmp_path / 'lr.journal'}"
    # TPE seeded with 1 (trial 0) and 2 (trial 1) draws -1.0 then 0.001.
    main(
        [
            "sweep",
            "lr",
            "--config",
            CONFIG,
            "--space",
            "space.yaml",
            "--n_trials",
            "2",
            "--sampler_seed",
            "1",
            "--storage",
            storage,
            *SHORT,
        ]
    )
    first, second = trials(Path("lr"), storage)
    assert (first.state.name, first.params) == ("FAIL", {"model.lr": -1.0})
    assert first.user_attrs["error"] == "lit_interp: error: lr=-1.0 must be positive; set model.lr to e.g. 1e-3"
    assert (second.state.name, second.params) == ("COMPLETE", {"model.lr": 0.001})
    output = capsys.readouterr().out
    assert "trial 0 failed" in output and "2 trials: 1 complete, 1 fail" in output


SPACE = "space space.yaml: "
SWEEP_SET = "is set by the sweep (each trial's run and checkpoints go in SWEEP_DIR/trial_NNNN); leave it out"
LR = "model.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-2"
BAD_COMMANDS = [
    (["--seeds", "3-1"], "--seeds '3-1': '3-1' is not a seed or a range; write e.g. 0-7 or 0,3,5"),
    (
        ["--seeds", "0-100000000"],
        "--seeds '0-100000000' names 100000001 seeds; a sweep runs at most 100000: split it into several sweeps",
    ),
    (
        ["--seeds", str(2**70)],
        f"--seeds '{2**70}': seed {2**70} is out of range; seeds are 0 to 4294967295",
    ),
    (["--seeds", "2**70"], "--seeds '2**70': '2**70' is not a seed or a range; write e.g. 0-7 or 0,3,5"),
    (["--seeds", "0-3,2"], "--seeds '0-3,2' names a seed twice; give each seed once"),
    (["--seeds", "0", "--sampler_seed", "-1"], "--sampler_seed=-1 must be between 0 and 4294967295"),
    (["--seeds", "0", "--sampler_seed", str(2**70)], f"--sampler_seed={2**70} must be between 0 and 4294967295"),
    (
        ["--seeds", "0", "--trainer.max_step"],
        "sweep: '--trainer.max_step' is not a sweep option nor a fit option written --key=value "
        "(e.g. --trainer.max_steps=500)",
    ),
    (["--seeds", "0", "--trainer.default_root_dir=elsewhere"], f"sweep: --trainer.default_root_dir {SWEEP_SET}"),
    (["--seeds", "0", "--checkpoint.dirpath=elsewhere"], f"sweep: --checkpoint.dirpath {SWEEP_SET}"),
    (
        ["--seeds", "0", "--seed_everything=3"],
        "--seeds sets seed_everything and data.init_args.seed; drop those overrides",
    ),
    (
        ["--space", "missing.yaml", "--n_trials", "2"],
        "--space missing.yaml does not exist; pass a YAML file mapping config keys to distributions",
    ),
    (["--space", "space.yaml"], "--space needs --n_trials N >= 1 (trials across all workers)"),
    (["--space", "space.yaml", "--n_trials", "1000000"], "--n_trials=1000000 must be at most 100000"),
    (
        ["--seeds", "0", "--storage", "lr.db"],
        "--storage lr.db: give an RDB URL (sqlite:///PATH, postgresql://...) or journal:PATH",
    ),
    (
        ["--seeds", "0", "--storage", "nosuch://host/db"],
        "--storage nosuch://host/db: not a database URL; "
        "give sqlite:///PATH, postgresql://USER@HOST/DB or journal:PATH",
    ),
    (
        ["--seeds", "0", "--storage", "postgresql://me:secret@db.example/sweeps"],
        "--storage postgresql://me:***@db.example/sweeps: keep the password out of the URL (it would be written to "
        "sweep.json and every trial's config); PostgreSQL reads it from PGPASSWORD or ~/.pgpass",
    ),
    (["--seeds", "0", "--storage", "journal:"], "--storage journal: needs a file, e.g. journal:/shared/sweep.journal"),
    (
        ["--seeds", "0", "--objective", "crossing:prev_token_score"],
        "--objective crossing:prev_token_score: write crossing:SCORE:HEAD:THRESHOLD, "
        "e.g. crossing:prev_token_score:L1H0:0.5",
    ),
    (
        ["--seeds", "0", "--objective", "crossing:prev_token_score:L1H0:1e"],
        "--objective crossing:prev_token_score:L1H0:1e: 1e is not a finite number",
    ),
    (
        ["--seeds", "0", "--objective", "reach:val/acc=0.9"],
        "--objective reach:val/acc=0.9: write reach:TAG>=VALUE or reach:TAG<=VALUE, e.g. reach:val/acc>=0.989",
    ),
    (["--seeds", "0", "--jobs", "0"], "--jobs=0 must be >= 1"),
    (["--seeds", "0", "--heartbeat", "0"], "--heartbeat=0 must be between 1 and 86400 seconds"),
    (
        ["--seeds", "0", "--grace_period", "10"],
        "--grace_period=10 must be more than --heartbeat=10 and at most 86400 seconds: "
        "a live worker beats at least once within it",
    ),
]
BAD_SPACES = [
    (
        "model.init_args.lr: {type: float, low: 0.0, high: 1e-2, log: true}",
        "model.init_args.lr has low=0.0, high=0.01; need low < high, and low > 0 with log: true",
    ),
    (
        "model.init_args.d_model: {type: categorical, choices: []}",
        "model.init_args.d_model needs only choices: a non-empty list of numbers, strings, booleans or null, "
        "e.g. {type: categorical, choices: [32, 64]}",
    ),
    (
        "lr: {type: float, low: 1e-4, high: 1e-2}",
        "'lr' is not a config key; use dotted keys such as model.init_args.lr or data.init_args.batch_size",
    ),
    (
        "model.init_args.lr: {type: uniform, low: 1e-4, high: 1e-2}",
        "model.init_args.lr must be a mapping with type float, int or categorical, "
        "e.g. {type: float, low: 1e-4, high: 1e-2, log: true}",
    ),
    (
        "model.init_args.warmup_steps: {type: int, low: 0, high: 200, step: 0}",
        "model.init_args.warmup_steps has step=0; need a positive integer",
    ),
    (
        "model.init_args.warmup_steps: {type: int, low: 0, high: 200, step: -50}",
        "model.init_args.warmup_steps has step=-50; need a positive integer",
    ),
    (
        "model.init_args.warmup_steps: {type: int, low: 0, high: 200, step: 2.5}",
        "model.init_args.warmup_steps has step=2.5; need a positive integer",
    ),
    (LR + ", step: 0.0}", "model.init_args.lr has step=0.0; need a positive number"),
    (
        LR + ", log: true, step: 1.0e-4}",
        "model.init_args.lr has both log: true and step; Optuna takes one of them",
    ),
    (
        "model.init_args.lr: {type: float, low: 1.0e-4, high: .inf}",
        "model.init_args.lr needs finite float low and high (and optionally log, step)",
    ),
    (
        "model.init_args.lr: {type: float, low: -1e400, high: 1.0}",
        "model.init_args.lr needs finite float low and high (and optionally log, step)",
    ),
    (LR + ", log: 'yes'}", "model.init_args.lr has log='yes'; write log: true or log: false"),
    (
        "'model.init_args.lr=0.1 --trainer.max_steps': {type: int, low: 1, high: 2}",
        "'model.init_args.lr=0.1 --trainer.max_steps' is not a config key; "
        "use dotted keys such as model.init_args.lr or data.init_args.batch_size",
    ),
    (
        '"model.init_args.lr\\n--trainer.max_steps": {type: int, low: 1, high: 2}',
        "'model.init_args.lr\\n--trainer.max_steps' is not a config key; "
        "use dotted keys such as model.init_args.lr or data.init_args.batch_size",
    ),
    ("trainer.default_root_dir: {type: categorical, choices: [a, b]}", f"trainer.default_root_dir {SWEEP_SET}"),
]


SPACE_SWEEP = ["--space", "space.yaml", "--n_trials", "2"]


@pytest.mark.parametrize(
    "argv, space, message",
    [(argv, LR + ", log: true}", message) for argv, message in BAD_COMMANDS]
    + [(SPACE_SWEEP, text, SPACE + message) for text, message in BAD_SPACES],
    ids=[" ".join(argv) for argv, _ in BAD_COMMANDS] + [text for text, _ in BAD_SPACES],
)
def test_bad_command_is_one_line_and_exit_2_and_writes_nothing(tmp_path, capsys, argv, space, message):
    (tmp_path / "space.yaml").write_text(space + "\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("an existing sweep directory's file\n")
    before = fingerprint(tmp_path)
    with pytest.raises(SystemExit) as exit:
        main(["sweep", "out", "--config", CONFIG, *argv])
    assert (exit.value.code, capsys.readouterr().err) == (2, f"lit_interp: error: {message}\n")
    assert fingerprint(tmp_path) == before


def test_another_command_on_the_same_study_is_refused(tmp_path, capsys):
    start(build_sweep(["study", "--config", CONFIG, "--seeds", "0-1"]))
    with pytest.raises(SystemExit):
        main(["sweep", "study", "--config", CONFIG, "--seeds", "0-2"])
    assert "study 'study' was started with seeds=[0, 1], not [0, 1, 2]" in capsys.readouterr().err


@pytest.mark.slow
def test_sweep_killed_mid_trial_resumes_from_last_checkpoint(tmp_path):
    long_trial = [
        *TINY["prev_token_digits"],
        "--trainer.max_steps=60",
        "--checkpoint.every_n_train_steps=5",
        "--trainer.callbacks=[]",
    ]
    command = sweep_command("seeds", "--seeds", "0-1", *long_trial)
    worker = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    checkpoints = Path("seeds/trial_0000/lightning_logs/version_0/checkpoints")
    first_checkpoint, last = checkpoints / "step_0000005.ckpt", checkpoints / "last.ckpt"
    while not last.exists():  # written (atomically) after the step's own checkpoint
        assert worker.poll() is None, "the sweep ended before its first checkpoint"
        time.sleep(0.02)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed_at = time.time()
    assert [t.state.name for t in trials(Path("seeds"))] == ["RUNNING", "WAITING"]  # seed 1 still queued
    assert first_checkpoint.is_file() and not (checkpoints / "step_0000060.ckpt").exists()
    time.sleep(1.0)
    assert os.path.getmtime(last) < killed_at  # the child fit died with its worker: nothing writes any more

    rerun = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "trial 0 resumed: seed=0" in rerun.stdout and "trial 1 started: seed=1" in rerun.stdout
    found = trials(Path("seeds"))
    assert [(t.number, t.state.name) for t in found] == [(0, "COMPLETE"), (1, "COMPLETE")]
    run = Path("seeds/trial_0000/lightning_logs")
    assert [p.name for p in run.iterdir()] == ["version_0"]  # continued in its own run directory
    assert os.path.getmtime(first_checkpoint) < killed_at  # not trained again from the start
    assert (checkpoints / "step_0000060.ckpt").is_file()
    starts = [line for line in Path("seeds/trial_0000/stderr.log").read_text().splitlines() if " PrevToken" in line]
    assert starts[0].startswith("lit_interp: training ") and starts[0].endswith("steps 0 to 60")
    assert len(starts) == 2 and starts[1].startswith("lit_interp: resuming ") and "steps 0 " not in starts[1]
    assert fits_started(Path("seeds/trial_0000")) == 1 and fits_started(Path("seeds/trial_0001")) == 1

    again = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert " started: " not in again.stdout and " resumed: " not in again.stdout  # nothing left to run


def test_a_sweep_directory_holds_one_study(tmp_path, capsys):
    start(build_sweep(["study", "--config", CONFIG, "--seeds", "0-1"]))
    before = fingerprint(tmp_path)
    with pytest.raises(SystemExit) as exit:
        main(["sweep", "study", "--config", CONFIG, "--seeds", "0-1", "--study_name", "other"])
    message = (
        "sweep directory study holds the trials of study 'study', not 'other'; use another directory for another study"
    )
    assert (exit.value.code, capsys.readouterr().err) == (2, f"lit_interp: error: {message}\n")
    assert fingerprint(tmp_path) == before
