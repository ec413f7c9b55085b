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


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "3-1"], "--seeds '3-1': '3-1' is not a seed or a range"),
        (["--seeds", "0", "--trainer.max_step"], "'--trainer.max_step' is not a sweep option nor a fit option"),
        (["--space", "missing.yaml", "--n_trials", "2"], "--space missing.yaml does not exist"),
        (["--space", "space.yaml"], "--space needs --n_trials"),
        (["--seeds", "0", "--storage", "lr.db"], "--storage lr.db: give an RDB URL"),
        (["--seeds", "0", "--objective", "crossing:prev_token_score"], "write crossing:SCORE:HEAD:THRESHOLD"),
        (["--seeds", "0", "--jobs", "0"], "--jobs=0 must be >= 1"),
        (["--seeds", "0", "--objective", "reach:val/acc=0.9"], "write reach:TAG>=VALUE or reach:TAG<=VALUE"),
    ],
)
def test_bad_command_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    (tmp_path / "space.yaml").write_text("model.init_args.lr: {type: float, low: 1e-4, high: 1e-2, log: true}\n")
    with pytest.raises(SystemExit) as exit:
        main(["sweep", "out", "--config", CONFIG, *argv])
    error = capsys.readouterr().err
    assert (
        exit.value.code == 2 and error.startswith("lit_interp: error: ") and message in error and error.count("\n") == 1
    )
    assert not Path("out").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "model.init_args.lr: {type: float, low: 0.0, high: 1e-2, log: true}",
            "need low < high, and low > 0 with log: true",
        ),
        ("model.init_args.d_model: {type: categorical, choices: []}", "needs only choices: a non-empty list"),
        ("lr: {type: float, low: 1e-4, high: 1e-2}", "'lr' is not a config key"),
        (
            "model.init_args.lr: {type: uniform, low: 1e-4, high: 1e-2}",
            "must be a mapping with type float, int or categorical",
        ),
    ],
)
def test_bad_space_file_is_refused(tmp_path, text, message):
    from lit_interp.errors import ConfigError

    (tmp_path / "space.yaml").write_text(text + "\n")
    with pytest.raises(ConfigError, match="space space.yaml") as error:
        build_sweep(["out", "--config", CONFIG, "--space", "space.yaml", "--n_trials", "2"])
    assert message in str(error.value)


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
    assert "Restoring states from the checkpoint path at" in Path("seeds/trial_0000/stderr.log").read_text()
    assert fits_started(Path("seeds/trial_0000")) == 1 and fits_started(Path("seeds/trial_0001")) == 1

    again = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert " started: " not in again.stdout and " resumed: " not in again.stdout  # nothing left to run
