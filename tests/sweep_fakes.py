"""A stand-in for a sweep trial's child fit, and a sweep worker that runs it: the worker's bookkeeping (claiming,
heartbeats, taking over, restarts) tested in seconds, on real storages, without training anything.

`python tests/sweep_fakes.py sweep ARGS...` is `python -m lit_interp sweep ARGS...` whose trials run `fit` below:
it counts steps (FAKE_FIT_STEPS, FAKE_FIT_STEP_SECONDS apart, times 1 + the seed with FAKE_FIT_SLOWER_BY_SEED),
keeps `last.ckpt` holding the step it reached (and resumes from it), logs start and end to the JSON-lines file
FAKE_FIT_LOG, kills itself with SIGKILL after one step on its first FAKE_FIT_KILLED_ATTEMPTS attempts, and ends
writing `metrics.csv` with `val/loss` = 1 + the seed.
FAKE_HOST stands in for the host name (a second "machine" on one host). `hold URL LOG` holds the storage's lock.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path


def fake_fit_command(sweep, trial_directory: Path, number: int, values: dict, resume: bool) -> list[str]:
    return [sys.executable, __file__, "fit", str(trial_directory), json.dumps(values), "resume" if resume else "new"]


def event(kind: str, trial_directory: Path, step: int) -> None:
    if log := os.environ.get("FAKE_FIT_LOG"):
        line = json.dumps({"event": kind, "trial": str(trial_directory), "pid": os.getpid(), "time": time.time()})
        with open(log, "a") as file:
            file.write(line + "\n")


def fit(trial_directory: Path, values: dict, resume: bool) -> None:
    run = trial_directory / "lightning_logs" / "version_0"
    checkpoint = run / "checkpoints" / "last.ckpt"
    attempts = trial_directory / "attempts"
    attempt = int(attempts.read_text()) + 1 if attempts.exists() else 1
    attempts.write_text(str(attempt))
    steps, seconds = int(os.environ.get("FAKE_FIT_STEPS", "4")), float(os.environ.get("FAKE_FIT_STEP_SECONDS", "0.05"))
    if os.environ.get("FAKE_FIT_SLOWER_BY_SEED"):
        seconds *= 1 + int(values.get("seed_everything", 0))
    step = first = int(checkpoint.read_text()) if resume else 0
    event("start", trial_directory, step)
    while step < steps:
        time.sleep(seconds)
        step += 1
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.with_suffix(".tmp").write_text(str(step))
        checkpoint.with_suffix(".tmp").replace(checkpoint)
        if step == first + 1 and attempt <= int(os.environ.get("FAKE_FIT_KILLED_ATTEMPTS", "0")):
            print("a warning that has nothing to do with the kill", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    value = 1.0 + float(values.get("seed_everything", 0))
    (run / "metrics.csv").write_text(f"step,val/loss\n{steps},{value}\n")
    event("end", trial_directory, step)


def hold(url: str, log: str, seconds: float = 0.4) -> None:
    """Hold the storage's lock of study `s` for a while, logging when it had it."""
    from lit_interp.optuna_storage import storage_lock

    with storage_lock(url, "s", Path(log).parent):
        start = time.time()
        time.sleep(seconds)
        with open(log, "a") as file:
            file.write(f"{start} {time.time()}\n")


def sweep(argv: list[str]) -> None:
    from lit_interp.cli import main
    from lit_interp.commands.sweep import workers

    workers.fit_command = fake_fit_command
    if host := os.environ.get("FAKE_HOST"):
        socket.gethostname = lambda: host
    main(["sweep", *argv])


if __name__ == "__main__":
    if sys.argv[1] == "fit":
        fit(Path(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4] == "resume")
    elif sys.argv[1] == "hold":
        hold(sys.argv[2], sys.argv[3])
    else:
        sweep(sys.argv[2:])
