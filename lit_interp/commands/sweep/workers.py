"""Sweep workers: each trial an ordinary `fit` in a child process tied to the worker's life, `jobs` at a time, with
heartbeats in the storage, dead workers' trials taken over, and a child killed by a signal resumed."""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_interp.commands.sweep.definition import RUN_ROOT_FLAG, Sweep, param_name
from lit_interp.commands.sweep.heartbeat import Heartbeats
from lit_interp.commands.sweep.launch import launch, start_fork_server
from lit_interp.commands.sweep.objective import objective_value
from lit_interp.commands.sweep.study import Claim, Identity, Nothing, claim, heartbeat_of
from lit_interp.optuna_storage import frozen_trial, trial_handle
from lit_interp.rundir import RANK_VARIABLES
from lit_interp.sweep_dir import trial_dir, trial_run_dir

# A child fit killed by a signal (the out-of-memory killer, kill -9) is resumed from its last.ckpt this many times;
# killed once more, its trial is FAIL with the signal as its error.
MAX_RESTARTS = 2
# Runs the child with PR_SET_PDEATHSIG, so the kernel kills it when its worker dies (kill -9 included) and no orphan
# keeps training in a directory another worker takes over; checked after setting it, as the worker may be gone.
DIE_WITH_WORKER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"
    "os.getppid() == int(sys.argv[1]) or os._exit(128 + signal.SIGKILL)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def format_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)  # true/false/null and numbers as YAML reads them


def fit_command(sweep: Sweep, trial_directory: Path, number: int, values: dict[str, Any], resume: bool) -> list[str]:
    command = [sys.executable, "-m", "lit_interp", "fit", "--config", sweep.config, *sweep.overrides]
    command += [f"--{key}={format_value(value)}" for key, value in values.items()]
    command += [f"{RUN_ROOT_FLAG}={trial_directory}", "--trainer.enable_progress_bar=false"]
    if sweep.prune:
        pruning = {
            "class_path": "lit_interp.sweep_pruning.OptunaPruning",
            "init_args": {"storage": sweep.storage, "study_name": sweep.study_name, "trial_number": number},
        }
        command.append(f"--trainer.callbacks+={json.dumps(pruning)}")
    return command + (["--ckpt_path", "last"] if resume else [])


# A worker's place in a cluster job (srun's task, torchrun's rank) is not its trials': each trial is a run of its own.
NOT_INHERITED = (*RANK_VARIABLES, "WORLD_SIZE", "LOCAL_WORLD_SIZE", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_NTASKS")


def warm_up(sweep: Sweep) -> None:
    """If this sweep's trials run warm, start their fork server now: its imports overlap the study's start."""
    start_fork_server(fit_command(sweep, Path(sweep.directory), 0, {}, resume=False))


def child_environment(jobs: int) -> dict[str, str]:
    """Each of `jobs` children gets its share of the cores, unless the user set the thread counts; none inherits the
    worker's rank in a cluster job (a trial's fit would take itself for one process of a bigger run)."""
    environment = {name: value for name, value in os.environ.items() if name not in NOT_INHERITED}
    if jobs > 1:
        threads = str(max(1, len(os.sched_getaffinity(0)) // jobs))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            environment.setdefault(name, threads)
    return environment


def tied_to_worker(command: list[str]) -> list[str]:
    if sys.platform != "linux":
        return command
    return [sys.executable, "-c", DIE_WITH_WORKER, str(os.getpid()), *command]


def killed_by(returncode: int) -> str | None:
    """The signal that ended a child: a negative return code, or lit_interp's 128+N after SIGTERM or SIGINT."""
    if returncode < 0:
        return signal.Signals(-returncode).name
    if returncode in (128 + signal.SIGTERM, 128 + signal.SIGINT):
        return signal.Signals(returncode - 128).name
    return None


def last_line(path: Path, offset: int) -> str:
    with path.open("rb") as file:
        file.seek(offset)
        lines = [line.strip() for line in file.read().decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no error message"


def describe(values: dict[str, Any]) -> str:
    shown = {
        ("seed" if key == "seed_everything" else param_name(key)): value
        for key, value in values.items()
        if key != "data.init_args.seed"
    }
    return ", ".join(f"{key}={value}" for key, value in shown.items())


@dataclass
class Running:
    """A trial's child fit in progress."""

    claimed: Claim
    child: Any  # subprocess.Popen, or launch.ForkedFit
    stderr: Path
    stderr_offset: int
    started: float
    restarts: int = 0


class Worker:
    """Claims trials and runs each as a child fit, `jobs` at a time, until the study has no trial left to run.

    The loop polls the children; the heartbeat thread only talks to the storage. A worker with nothing left to
    start waits while trials it could take over still run elsewhere.
    """

    def __init__(self, sweep: Sweep, storage: Any, directory_id: str):
        self.sweep = sweep
        self.storage = storage
        self.identity = Identity.here(directory_id)
        self.running: dict[int, Running] = {}
        beat = heartbeat_of(sweep)
        self.heartbeats = Heartbeats(sweep.storage, beat.interval if beat else None)

    def run(self) -> None:
        self.heartbeats.start()
        next_claim = 0.0
        try:
            while True:
                if time.monotonic() >= next_claim:
                    next_claim = self.fill()
                if not self.running and next_claim == math.inf:
                    return
                time.sleep(0.1)
                if self.poll():
                    next_claim = 0.0  # a slot is free, or the study may be done: claim now, not a heartbeat later
        except KeyboardInterrupt:
            for trial in self.running.values():  # the trials stay RUNNING: the next run of the command continues them
                trial.child.terminate()
                trial.child.wait()
                trial.claimed.lock.release()
            raise
        finally:
            self.heartbeats.stop()

    def fill(self) -> float:
        """Claim trials while a slot is free; when to claim again (now, after a heartbeat interval, or never)."""
        while len(self.running) < self.sweep.jobs:
            claimed = claim(self.sweep, self.storage, self.identity)
            if claimed is Nothing.DONE:
                return math.inf
            if claimed is Nothing.WAIT:
                return time.monotonic() + self.sweep.heartbeat
            self.heartbeats.add(claimed.number, claimed.trial_id)
            if claimed.lock is None and not self.wait_for_lock(claimed):
                continue
            self.running[claimed.number] = self.launch(claimed)
        return 0.0

    def poll(self) -> bool:
        """Finish the trials whose child has exited (or restart it); whether any did."""
        ended = False
        for number, trial in list(self.running.items()):
            if trial.child.poll() is not None:
                del self.running[number]
                ended = True
                if not self.restart(trial):
                    try:
                        self.finish(trial)
                    finally:
                        trial.claimed.lock.release()
        return ended

    def wait_for_lock(self, claimed: Claim) -> bool:
        """A retry's directory is still locked by the worker that lost the trial: it stops its child within a
        heartbeat; if the lock stays held past two grace periods, the retry fails."""
        from filelock import FileLock, Timeout

        path = trial_dir(self.sweep.directory, claimed.home) / "trial.lock"
        claimed.lock = FileLock(path)
        try:
            claimed.lock.acquire(timeout=2 * self.sweep.grace_period)
            return True
        except Timeout:
            self.heartbeats.remove(claimed.number)
            problem = f"{path} stayed locked for {2 * self.sweep.grace_period} s; is the trial still running there?"
            self.tell_failed(claimed, problem, 0.0)
            return False

    def launch(self, claimed: Claim, restarts: int = 0) -> Running:
        directory = trial_dir(self.sweep.directory, claimed.home)
        resume = (trial_run_dir(directory) / "checkpoints" / "last.ckpt").is_file()
        if not resume and (directory / "lightning_logs").exists():
            shutil.rmtree(directory / "lightning_logs")  # cut off before its first checkpoint: start it again
        note = ""
        if restarts == 0:
            claimed.trial.set_user_attr("run_dir", str(trial_run_dir(Path(directory.name))))
        if claimed.took_over_from is not None and restarts == 0:
            how = "continued from last.ckpt" if resume else "restarted from scratch"
            claimed.trial.set_user_attr("took_over_from", claimed.took_over_from)
            claimed.trial.set_user_attr("takeover", how)
            note = f" (takes over trial {claimed.took_over_from}: {how} in {directory.name})"
        command = fit_command(self.sweep, directory, claimed.number, claimed.values, resume)
        (directory / "command.txt").write_text(shlex.join(command) + "\n")
        stderr_path = directory / "stderr.log"
        offset = stderr_path.stat().st_size if stderr_path.exists() else 0
        verb = "resumed" if resume else "started"
        print(f"trial {claimed.number} {verb}: {describe(claimed.values)}{note}", flush=True)
        environment = child_environment(self.sweep.jobs)
        child = launch(command, directory / "stdout.log", stderr_path, environment, tied_to_worker(command))
        self.heartbeats.add(claimed.number, claimed.trial_id, child)
        return Running(claimed, child, stderr_path, offset, time.monotonic(), restarts)

    def restart(self, trial: Running) -> bool:
        """A child killed by a signal (not by this worker) goes on from its last.ckpt, at most MAX_RESTARTS times."""
        name = killed_by(trial.child.returncode)
        number = trial.claimed.number
        if name is None or number in self.heartbeats.lost or trial.restarts >= MAX_RESTARTS:
            return False
        handle = trial_handle(trial.claimed.study, number)
        restarts = [*handle.user_attrs.get("restarts", []), f"its fit was killed by {name}"]
        handle.set_user_attr("restarts", restarts)
        print(f"trial {number}: its fit was killed by {name}; running it again", flush=True)
        self.running[number] = self.launch(trial.claimed, trial.restarts + 1)
        return True

    def tell_failed(self, claimed: Claim, problem: str, elapsed: float) -> None:
        import optuna

        claimed.trial.set_user_attr("error", problem)
        claimed.study.tell(claimed.number, state=optuna.trial.TrialState.FAIL)
        print(f"trial {claimed.number} failed after {elapsed:.1f} s: {problem}", flush=True)

    def finish(self, trial: Running) -> None:
        """Tell the study how the trial ended: FAIL with its error, PRUNED, or the objective's value."""
        import optuna

        number, study = trial.claimed.number, trial.claimed.study
        self.heartbeats.remove(number)
        elapsed = time.monotonic() - trial.started
        stored = frozen_trial(study, number)  # as the storage has it now: its child's pruning callback writes there
        if number in self.heartbeats.lost or stored.state.is_finished():
            print(f"trial {number} was taken over by another worker (this one's heartbeats came late)", flush=True)
            return
        run = trial_run_dir(trial_dir(self.sweep.directory, trial.claimed.home))
        name = killed_by(trial.child.returncode)
        if name is not None:
            times = f" {trial.restarts + 1} times" if trial.restarts else ""
            problem = f"its fit was killed by {name}{times} (the out-of-memory killer, or kill -9?)"
        elif trial.child.returncode != 0:
            problem = last_line(trial.stderr, trial.stderr_offset)
        elif (pruned_at := stored.user_attrs.get("pruned_at_step")) is not None:
            study.tell(number, state=optuna.trial.TrialState.PRUNED)
            print(f"trial {number} pruned at step {pruned_at}", flush=True)
            return
        else:
            value, problem = objective_value(self.sweep.objective, run)
        if problem:
            return self.tell_failed(trial.claimed, problem, elapsed)
        study.tell(number, value)
        print(f"trial {number} done in {elapsed:.1f} s: {self.sweep.objective} = {value:.6g}", flush=True)
