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


def start(command: list[str], name: str):
    return launch(command, Path(f"{name}.out"), Path(f"{name}.err"), child_environment(1), command)


def test_a_forked_trial_trains_what_a_fresh_process_trains_and_logs_to_its_files():
    forked = start(fit("warm"), "warm")
    assert isinstance(forked, ForkedFit) and forked.wait(timeout=300) == 0
    subprocess.run(fit("cold"), check=True, capture_output=True, timeout=300)
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
    print(trial.pid, flush=True)
"""


def test_a_worker_that_exits_kills_its_running_trials_instead_of_waiting_for_them():
    Path("leave.py").write_text(LEAVE_A_TRIAL_RUNNING)
    worker = subprocess.run(
        [sys.executable, "leave.py", *fit("left", "--trainer.max_steps=100000")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stderr
    trial = int(worker.stdout.split()[-1])
    time.sleep(0.5)
    assert not Path(f"/proc/{trial}").exists() or Path(f"/proc/{trial}/stat").read_text().split()[2] == "Z"
