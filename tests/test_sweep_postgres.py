"""Sweeps of real fits on a real PostgreSQL server: two "machines" (two workers, two sweep directories) with one killed
mid-trial and its trial taken over, a pruned search whose trials report to the server, and (on SQLite) a trial's fit
killed by SIGKILL and resumed from its last.ckpt. Slow: each trains tiny models for real."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import CONFIGS, TINY
from storages import postgres_server, postgres_url  # noqa: F401 (fixtures)

from lit_interp.cli import main
from lit_interp.optuna_storage import open_storage

pytestmark = pytest.mark.slow

CONFIG = str(CONFIGS / "prev_token_digits.yaml")
SNAPSHOTS = {"every_n_train_steps": 10, "probe_batch_size": 8, "hook_mean_ablation": False, "log_images": False}
TRIAL = [
    *TINY["prev_token_digits"],
    "--trainer.max_steps=40",
    "--trainer.val_check_interval=10",
    "--checkpoint.every_n_train_steps=5",
    "--trainer.callbacks="
    + json.dumps([{"class_path": "lit_interp.callbacks.AnalysisSnapshots", "init_args": SNAPSHOTS}]),
]
HEARTBEAT = ["--heartbeat", "1", "--grace_period", "4"]


def sweep(directory: str, storage: str, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "lit_interp", "sweep", directory, "--config", CONFIG, "--study_name", "s"]
    return subprocess.Popen(
        [*command, "--storage", storage, *TRIAL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="s", storage=open_storage(storage)).get_trials()


def test_two_machines_share_a_postgresql_study_and_one_takes_over_when_the_other_dies(postgres_url):  # noqa: F811
    first = sweep("a/sweep", postgres_url, "--seeds", "0-3", *HEARTBEAT)
    second = sweep("b/sweep", postgres_url, "--seeds", "0-3", *HEARTBEAT)
    deadline = time.monotonic() + 600
    while not list(Path("a/sweep").glob("trial_*/lightning_logs/version_0/checkpoints/last.ckpt")):
        assert time.monotonic() < deadline and first.poll() is None, "worker a wrote no checkpoint"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # machine a is lost: its worker and (PR_SET_PDEATHSIG) its child fit
    first.wait()
    killed_at = time.time()
    out, err = second.communicate(timeout=900)
    assert second.returncode == 0, err[-3000:]
    found = trials(postgres_url)
    dead = [t for t in found if t.state.name == "FAIL"]
    assert (
        len(dead) == 1
        and dead[0].user_attrs["worker"]["directory_id"]
        == json.loads(Path("a/sweep/sweep.json").read_text())["directory_id"]
    )
    (retry,) = [t for t in found if t.system_attrs.get("failed_trial") == dead[0].number]
    assert retry.user_attrs["takeover"] == "restarted from scratch"  # a's directory is not reachable from b
    assert retry.datetime_start.timestamp() >= killed_at + 4 - 1.5  # not before the grace period
    latest = {t.system_attrs.get("failed_trial", t.number): t for t in found}
    assert sorted(latest) == [0, 1, 2, 3] and all(t.state.name == "COMPLETE" for t in latest.values())
    assert len(found) == 5  # four trials, one retried: none lost, none run twice
    stale = Path(f"a/sweep/trial_{dead[0].number:04d}/lightning_logs/version_0/checkpoints/last.ckpt")
    assert os.path.getmtime(stale) < killed_at + 1  # nothing trained on in a's directory after the kill

    main(["analyze", "--runs", "a/sweep", "b/sweep", "--out", "report"])
    rows = {row["run"]: row for row in csv.DictReader(Path("report/runs.csv").open())}
    complete = sorted(row["trial"] for row in rows.values() if row["state"] == "COMPLETE")
    assert complete == ["0", "1", "2", "3"]
    lost = rows[f"a/sweep/trial_{dead[0].number:04d}/version_0"]
    assert lost["state"] == "FAIL" and lost["error"] == (
        f"its worker stopped sending heartbeats; trial {retry.number} took it over in another sweep directory"
    )


def test_a_pruned_search_reports_to_postgresql_from_every_trial(postgres_url, tmp_path):  # noqa: F811
    (tmp_path / "space.yaml").write_text("model.init_args.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    worker = sweep("search", postgres_url, "--space", str(tmp_path / "space.yaml"), "--n_trials", "2", "--prune")
    out, err = worker.communicate(timeout=900)
    assert worker.returncode == 0, err[-3000:]
    found = trials(postgres_url)
    assert [t.state.name for t in found] == ["COMPLETE", "COMPLETE"]
    assert all(sorted(t.intermediate_values) == [10, 20, 30, 40] for t in found)  # val/loss at every validation


def test_a_trials_fit_killed_by_sigkill_resumes_from_its_last_checkpoint(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    worker = sweep("sweep", storage, "--seeds", "0", "--trainer.max_steps=60")
    owner = Path("sweep/trial_0000/lightning_logs/version_0/.owner")
    checkpoint = owner.with_name("checkpoints") / "last.ckpt"
    deadline = time.monotonic() + 600
    while not (checkpoint.exists() and owner.exists()):
        assert time.monotonic() < deadline and worker.poll() is None, "the trial wrote no checkpoint"
        time.sleep(0.05)
    child = int(owner.read_text().split()[1])  # "process PID on HOST: ..."
    os.kill(child, signal.SIGKILL)  # as the out-of-memory killer would
    out, err = worker.communicate(timeout=900)
    assert worker.returncode == 0, err[-3000:]
    (trial,) = trials(storage)
    assert trial.state.name == "COMPLETE" and trial.user_attrs["restarts"] == ["its fit was killed by SIGKILL"]
    assert "trial 0: its fit was killed by SIGKILL; running it again" in out and "trial 0 resumed: seed=0" in out
    starts = [line for line in Path("sweep/trial_0000/stderr.log").read_text().splitlines() if " PrevToken" in line]
    assert starts and "steps 0 to" not in starts[-1], starts  # the fit run again continued from its checkpoint
    assert [p.name for p in Path("sweep/trial_0000/lightning_logs").iterdir()] == ["version_0"]
