"""Sweep trials forked from a warm server behave as fresh `python -m lit_interp fit` processes do."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, TINY

from lit_interp.commands.sweep.launch import ForkedFit, launch
from lit_interp.commands.sweep.workers import child_environment, killed_by

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the fork server is Linux-only here")


def fit(root: str, *extra: str) -> list[str]:
    config = ["--config", str(CONFIGS / "prev_token_digits.yaml"), *TINY["prev_token_digits"]]
    options = ["--trainer.max_steps=6", "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]"]
    return [sys.executable, "-m", "lit_interp", "fit", *config, *options, f"--trainer.default_root_dir={root}", *extra]


def start(command: list[str], name: str, environment: dict[str, str] | None = None):
    environment = environment or child_environment(1)
    return launch(command, Path(f"{name}.out"), Path(f"{name}.err"), environment, command)


def test_a_forked_trial_trains_what_a_fresh_process_trains_and_logs_to_its_files():
    environment = dict(child_environment(1), LIT_INTERP_THREADS="1")  # side by side, each on a core of its own
    fresh = subprocess.Popen(fit("cold"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
    forked = start(fit("warm"), "warm", environment)
    assert isinstance(forked, ForkedFit) and forked.wait(timeout=300) == 0
    assert fresh.wait(timeout=300) == 0
    warm = torch.load("warm/lightning_logs/version_0/checkpoints/last.ckpt", weights_only=False)["state_dict"]
    cold = torch.load("cold/lightning_logs/version_0/checkpoints/last.ckpt", weights_only=False)["state_dict"]
    assert warm.keys() == cold.keys() and all(torch.equal(warm[name], cold[name]) for name in warm)
    assert "lit_interp: training PrevTokenDigitsModule" in Path("warm.err").read_text()


def test_a_forked_trials_user_error_is_its_exit_code_and_last_line():
    forked = start(fit("bad", "--trainer.max_steps=0"), "bad")
    assert forked.wait(timeout=300) == 2
    assert Path("bad.err").read_text().strip().splitlines()[-1] == (
        "lit_interp: error: trainer.max_steps=0 must be >= 1, or -1 together with --trainer.max_time"
    )
    assert not Path("bad").exists()


def test_a_killed_forked_trial_reads_as_killed_by_its_signal():
    forked = start(fit("killed", "--trainer.max_steps=100000"), "killed")
    deadline = time.monotonic() + 300
    while "training PrevTokenDigitsModule" not in Path("killed.err").read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    forked.kill()
    assert forked.wait(timeout=60) == -signal.SIGKILL and killed_by(forked.returncode) == "SIGKILL"


def test_any_other_command_runs_as_a_fresh_process():
    child = start([sys.executable, "-c", "print('fresh')"], "other")
    assert isinstance(child, subprocess.Popen) and child.wait(timeout=60) == 0
    assert Path("other.out").read_text() == "fresh\n"


LEAVE_A_TRIAL_RUNNING = """
import sys, time
from pathlib import Path
from lit_interp.commands.sweep.launch import launch
from lit_interp.commands.sweep.workers import child_environment
if __name__ == "__main__":
    command = sys.argv[1:]
    trial = launch(command, Path("left.out"), Path("left.err"), child_environment(1), command)
    while "training PrevTokenDigitsModule" not in Path("left.err").read_text():
        time.sleep(0.2)
    import multiprocessing.forkserver
    print(trial.pid, multiprocessing.forkserver._forkserver._forkserver_pid, flush=True)
"""


def test_a_worker_that_exits_kills_its_running_trials_and_its_fork_server_instead_of_waiting_for_them():
    Path("leave.py").write_text(LEAVE_A_TRIAL_RUNNING)
    worker = subprocess.Popen(
        [sys.executable, "leave.py", *fit("left", "--trainer.max_steps=100000")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert worker.wait(timeout=120) == 0
    trial, server = map(int, worker.stdout.readline().split())
    worker.stdout.close()
    # the moment the worker has exited: the fork server is reaped (its shutdown would hold the worker's output open)
    assert not Path(f"/proc/{server}").exists()
    time.sleep(0.5)
    assert not Path(f"/proc/{trial}").exists() or Path(f"/proc/{trial}/stat").read_text().split()[2] == "Z"
