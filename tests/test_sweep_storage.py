"""Sweep workers on SQLite, the journal file and PostgreSQL: two directories sharing one study, a dead worker's trial
taken over (after the grace period by heartbeat, at once by its lock), a child killed by a signal resumed, the
storage's lock, and the heartbeat stopping a child whose trial was taken over. Trials run tests/sweep_fakes.py's
stand-in fit, so each test takes seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import CONFIGS
from storages import any_storage, heartbeat_storage, postgres_server, postgres_url, storage_url  # noqa: F401
from sweep_fakes import fake_fit_command, hold

from lit_interp.cli import main
from lit_interp.optuna_storage import Heartbeat, open_storage
from lit_interp.sweep_dir import read_sweep_info

FAKES = Path(__file__).with_name("sweep_fakes.py")
CONFIG = str(CONFIGS / "prev_token_digits.yaml")
HEARTBEAT = ["--heartbeat", "1", "--grace_period", "3"]


def study_trials(storage: str, name: str = "s") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(storage)).get_trials()


def worker(directory: str, storage: str, *args: str, **environment: str) -> subprocess.Popen:
    command = [sys.executable, str(FAKES), "sweep", directory, "--config", CONFIG, "--study_name", "s"]
    env = {**os.environ, "FAKE_FIT_LOG": str(Path("events.log").resolve()), **environment}
    return subprocess.Popen(
        [*command, "--storage", storage, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def events() -> list[dict]:
    path = Path("events.log")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_workers_in_two_directories_share_one_study_and_run_every_trial_once(any_storage):  # noqa: F811
    workers = [worker(d, any_storage, "--seeds", "0-5", "--jobs", "2", *HEARTBEAT) for d in ("a/sweep", "b/sweep")]
    outputs = [w.communicate(timeout=240) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    found = study_trials(any_storage)
    assert [(t.number, t.state.name, t.params["seed"]) for t in found] == [(n, "COMPLETE", n) for n in range(6)]
    ids = {d: read_sweep_info(Path(d))["directory_id"] for d in ("a/sweep", "b/sweep")}
    assert len(set(ids.values())) == 2  # each directory its own id, recorded on the trials it ran
    for trial in found:
        directory = next(d for d, i in ids.items() if i == trial.user_attrs["worker"]["directory_id"])
        run = Path(directory, f"trial_{trial.number:04d}", "lightning_logs", "version_0")
        assert (run / "metrics.csv").is_file() and trial.value == 1.0 + trial.number
    started = sorted(Path(e["trial"]).name for e in events() if e["event"] == "start")
    assert started == [f"trial_{n:04d}" for n in range(6)]  # every trial started once, in one directory


def test_a_worker_running_trials_side_by_side_exits_when_its_last_trial_ends_not_a_heartbeat_later(request):
    """When one of two parallel trials ends, the other still runs and the worker waits to claim again; the other's
    end must wake it at once (it once slept out the heartbeat interval: 9 s of a 51 s sweep at the default 10 s)."""
    storage = storage_url("sqlite", Path.cwd(), request)
    beat = ["--heartbeat", "30", "--grace_period", "60"]
    slower = {"FAKE_FIT_SLOWER_BY_SEED": "1", "FAKE_FIT_STEP_SECONDS": "0.25"}  # seed 0: 1 s, seed 1: 2 s
    sweep_worker = worker("sweep", storage, "--seeds", "0-1", "--jobs", "2", *beat, **slower)
    out, err = sweep_worker.communicate(timeout=120)
    exited = time.time()
    assert sweep_worker.returncode == 0, err
    ends = sorted(e["time"] for e in events() if e["event"] == "end")
    assert len(ends) == 2 and ends[1] - ends[0] >= 0.5  # seed 1's trial ended well after seed 0's: the worker waited
    assert exited - ends[1] < 10, f"the worker exited {exited - ends[1]:.1f} s after its last trial ended"
    assert out.splitlines()[-2].startswith("2 trials: 2 complete")


def test_a_dead_workers_trial_is_taken_over_by_heartbeat_in_another_directory(heartbeat_storage):  # noqa: F811
    slow = {"FAKE_FIT_STEPS": "200", "FAKE_FIT_STEP_SECONDS": "0.05"}
    first = worker("a/sweep", heartbeat_storage, "--seeds", "0-1", *HEARTBEAT, **slow)
    checkpoint = Path("a/sweep/trial_0000/lightning_logs/version_0/checkpoints/last.ckpt")
    wait_for(checkpoint.exists, 60, "worker a's first checkpoint")
    second = worker("b/sweep", heartbeat_storage, "--seeds", "0-1", "--jobs", "2", *HEARTBEAT, FAKE_FIT_STEPS="4")
    wait_for(lambda: len(study_trials(heartbeat_storage)) == 2 and "trial_0001" in str(events()), 60, "trial 1")
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = time.monotonic()
    lines, took = [], None
    for line in second.stdout:  # the moment worker b reports the takeover
        lines.append(line)
        if "takes over trial 0" in line:
            took = time.monotonic() - killed_at
            break
    assert took is not None and 3 - 1 <= took <= 3 + 1 + 5, f"took over {took} s after the kill; grace period 3 s"
    time.sleep(1.0)
    step = checkpoint.read_text()
    time.sleep(0.5)
    assert checkpoint.read_text() == step  # worker a's child died with it: nothing trains there any more
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    dead, other, retry = study_trials(heartbeat_storage)
    assert (dead.number, dead.state.name) == (0, "FAIL")
    assert (other.state.name, retry.state.name, retry.params, retry.system_attrs["failed_trial"]) == (
        "COMPLETE",
        "COMPLETE",
        {"seed": 0},
        0,
    )
    assert (retry.user_attrs["took_over_from"], retry.user_attrs["takeover"]) == (0, "restarted from scratch")
    assert retry.user_attrs["worker"]["directory_id"] == read_sweep_info(Path("b/sweep"))["directory_id"]
    assert "trial 2 started: seed=0 (takes over trial 0: restarted from scratch in trial_0000)" in "".join(lines)
    assert out.splitlines()[-2].startswith("2 trials: 2 complete")  # a trial and its retry counted once
    assert Path("b/sweep/trial_0000/lightning_logs/version_0/metrics.csv").is_file()


@pytest.mark.parametrize("kind, host, grace", [("sqlite", "same", "30"), ("postgresql", "other", "3")])
def test_a_dead_workers_trial_continues_from_its_last_checkpoint_in_a_shared_directory(request, kind, host, grace):
    """On its own host a worker sees a dead worker's free lock and takes over at once, in place; from another host
    (whose view of a shared filesystem's locks may not be the dead one's) it waits for the grace period."""
    slow = {"FAKE_FIT_STEPS": "40", "FAKE_FIT_STEP_SECONDS": "0.05", "FAKE_HOST": "first"}
    beat = ["--heartbeat", "1", "--grace_period", grace]
    storage = storage_url(kind, Path.cwd(), request)
    first = worker("sweep", storage, "--seeds", "0", *beat, **slow)
    checkpoint = Path("sweep/trial_0000/lightning_logs/version_0/checkpoints/last.ckpt")
    wait_for(lambda: checkpoint.exists() and int(checkpoint.read_text()) >= 2, 60, "the first checkpoints")
    first.send_signal(signal.SIGKILL)
    first.wait()
    started = time.monotonic()
    second = worker("sweep", storage, "--seeds", "0", *beat, FAKE_HOST="first" if host == "same" else "b")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    final = study_trials(storage)[-1]
    assert final.state.name == "COMPLETE" and final.user_attrs["takeover"] == "continued from last.ckpt"
    assert final.user_attrs["took_over_from"] == 0
    if host == "same":
        assert final.number == 0 and "trial 0 resumed: seed=0 (takes over trial 0" in out
        assert time.monotonic() - started < 30  # well within the grace period: the lock told it the worker died
    else:
        assert final.number == 1 and "trial 1 resumed: seed=0 (takes over trial 0" in out
    starts = [e for e in events() if e["event"] == "start"]
    assert len(starts) == 2 and Path("sweep/trial_0000/attempts").read_text() == "2"


def test_journal_takes_over_by_the_directory_lock_only(tmp_path):
    storage = f"journal:{tmp_path / 'study.journal'}"
    first = worker("sweep", storage, "--seeds", "0", FAKE_FIT_STEPS="40", FAKE_FIT_STEP_SECONDS="0.05")
    checkpoint = Path("sweep/trial_0000/lightning_logs/version_0/checkpoints/last.ckpt")
    wait_for(checkpoint.exists, 60, "the first checkpoint")
    first.send_signal(signal.SIGKILL)
    first.wait()
    other = worker("elsewhere", storage, "--seeds", "0")
    out, _ = other.communicate(timeout=60)
    # No heartbeat in a journal: another directory cannot tell the trial dead, and leaves it alone.
    assert other.returncode == 0 and " started: " not in out and " resumed: " not in out
    assert [t.state.name for t in study_trials(storage)] == ["RUNNING"]
    same = worker("sweep", storage, "--seeds", "0")
    out, _ = same.communicate(timeout=120)
    assert "trial 0 resumed: seed=0 (takes over trial 0: continued from last.ckpt in trial_0000)" in out
    assert [t.state.name for t in study_trials(storage)] == ["COMPLETE"]


def in_process_sweep(monkeypatch, storage: str, *args: str) -> None:
    from lit_interp.commands.sweep import workers

    monkeypatch.setattr(workers, "fit_command", fake_fit_command)
    main(["sweep", "sweep", "--config", CONFIG, "--study_name", "s", "--storage", storage, "--seeds", "0", *args])


def test_a_child_killed_by_a_signal_is_resumed_from_its_last_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_FIT_KILLED_ATTEMPTS", "1")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    in_process_sweep(monkeypatch, storage)
    (trial,) = study_trials(storage)
    assert (trial.state.name, trial.value) == ("COMPLETE", 1.0)
    assert trial.user_attrs["restarts"] == ["its fit was killed by SIGKILL"] and "error" not in trial.user_attrs
    assert "trial 0: its fit was killed by SIGKILL; running it again" in capsys.readouterr().out
    assert Path("sweep/trial_0000/command.txt").read_text().endswith("resume\n")


def test_a_child_killed_again_and_again_fails_with_the_signal_as_its_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_FIT_KILLED_ATTEMPTS", "3")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    in_process_sweep(monkeypatch, storage)
    (trial,) = study_trials(storage)
    assert trial.state.name == "FAIL" and Path("sweep/trial_0000/attempts").read_text() == "3"
    assert trial.user_attrs["error"] == "its fit was killed by SIGKILL 3 times (the out-of-memory killer, or kill -9?)"
    assert len(trial.user_attrs["restarts"]) == 2


def test_the_heartbeat_stops_a_child_whose_trial_another_worker_failed(tmp_path):
    from lit_interp.commands.sweep.heartbeat import Heartbeats

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=open_storage(url, Heartbeat(1, 2)), study_name="s")
    with pytest.warns(UserWarning, match="Heartbeat of storage is supposed to be used with Study.optimize"):
        trial = study.ask()  # the worker beats from its own thread instead
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    heartbeats = Heartbeats(url, 1)
    heartbeats.add(trial.number, trial._trial_id, child)
    heartbeats.start()
    try:
        time.sleep(1.5)
        assert child.poll() is None and heartbeats.lost == set()
        open_storage(url).set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)  # another worker
        child.wait(timeout=10)
    finally:
        heartbeats.stop()
        child.kill()
    assert child.returncode == -signal.SIGKILL and heartbeats.lost == {trial.number}


def test_the_storage_lock_lets_one_process_at_a_time_in(any_storage, tmp_path):  # noqa: F811
    log = tmp_path / "held.log"
    holders = [subprocess.Popen([sys.executable, str(FAKES), "hold", any_storage, str(log)]) for _ in range(3)]
    hold(any_storage, str(log))
    assert [h.wait(timeout=60) for h in holders] == [0, 0, 0]
    spans = sorted(tuple(map(float, line.split())) for line in log.read_text().splitlines())
    assert len(spans) == 4 and all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:]))


def test_reading_a_servers_study_waits_for_the_worker_creating_it(postgres_url):  # noqa: F811
    # Optuna stamps a half-created database's schema version even when opened read-only: unlocked, that raced the
    # creating worker's tables and failed it.
    import threading

    from lit_interp.commands.sweep.definition import build_sweep
    from lit_interp.commands.sweep.study import existing_definition
    from lit_interp.optuna_storage import postgres_lock

    sweep = build_sweep(["sweep", "--config", CONFIG, "--seeds", "0-1", "--storage", postgres_url, "--study_name", "s"])
    read: list = []
    with postgres_lock(postgres_url, "s"):  # as start() holds it while it creates the tables and the study
        reader = threading.Thread(target=lambda: read.append(existing_definition(sweep)))
        reader.start()
        reader.join(timeout=1.0)
        assert reader.is_alive()  # waiting for the lock, not reading the empty database
        study = optuna.create_study(storage=open_storage(postgres_url), study_name="s")
        study.set_user_attr("lit_interp_sweep", {"recorded": 1})
    reader.join(timeout=60)
    assert read == [{"recorded": 1}]


@pytest.mark.parametrize(
    "environment, owns",
    [
        ({}, True),
        ({"RANK": "0", "LOCAL_RANK": "0", "NODE_RANK": "0"}, True),
        ({"LOCAL_RANK": "1"}, False),  # a rank Lightning started on this node
        ({"NODE_RANK": "1"}, False),  # the first process of the second node
        ({"GROUP_RANK": "1"}, False),  # torchrun's node rank
        ({"SLURM_PROCID": "3"}, False),  # srun's fourth task
    ],
)
def test_only_the_runs_first_process_makes_and_locks_its_directory(environment, owns):
    from lit_interp.rundir import owns_run

    assert owns_run(environment) is owns


def test_a_trial_does_not_inherit_its_workers_place_in_a_cluster_job(monkeypatch):
    from lit_interp.commands.sweep.workers import child_environment

    cluster = {"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "RANK": "3", "WORLD_SIZE": "8", "SLURM_JOB_ID": "42"}
    for name, value in cluster.items():
        monkeypatch.setenv(name, value)
    environment = child_environment(jobs=1)
    assert {name: environment.get(name) for name in cluster} == {
        "SLURM_PROCID": None,
        "SLURM_NTASKS": None,
        "RANK": None,
        "WORLD_SIZE": None,
        "SLURM_JOB_ID": "42",
    }


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_what_the_sweep_reads_of_optuna_keeps_its_meaning(tmp_path):
    """Pins Optuna's internals the sweep relies on: a Trial made from a trial's storage id is that trial; a stale
    trial is failed and retried by the storage's callback, its retry naming the original in the system attributes
    Optuna's own RetryFailedTrialCallback.retried_trial_number and retry_history read."""
    from lit_interp.optuna_storage import fail_stale_trials, record_heartbeat, trial_handle
    from lit_interp.sweep_dir import home_number

    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", Heartbeat(1, 2))
    study = optuna.create_study(storage=storage, study_name="s")
    with pytest.warns(UserWarning, match="Heartbeat of storage"):
        trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    record_heartbeat(storage, trial._trial_id)
    assert trial_handle(study, trial.number).params == trial.params
    assert fail_stale_trials(study, storage) == []  # beating
    time.sleep(3.2)
    assert fail_stale_trials(study, storage) == [trial.number]
    stale, retry = study.get_trials()
    retried = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", optuna.storages.RetryFailedTrialCallback)
    assert (stale.state.name, retry.state.name, retry.params) == ("FAIL", "WAITING", stale.params)
    assert retried.retried_trial_number(retry) == home_number(retry) == stale.number
    assert retried.retry_history(retry) == retry.system_attrs["retry_history"] == [stale.number]
