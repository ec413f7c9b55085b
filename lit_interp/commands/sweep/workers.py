"""Sweep workers: each trial an ordinary `fit` in a child process tied to the worker's life, `jobs` at a time."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_interp.commands.sweep.definition import RUN_ROOT_FLAG, Sweep, param_name
from lit_interp.commands.sweep.objective import objective_value
from lit_interp.commands.sweep.study import Claim, claim
from lit_interp.optuna_storage import trial_handle
from lit_interp.sweep_dir import trial_dir, trial_run_dir


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


def child_environment(jobs: int) -> dict[str, str]:
    """Each of `jobs` children gets its share of the cores, unless the user set the thread counts."""
    environment = dict(os.environ)
    if jobs > 1:
        threads = str(max(1, len(os.sched_getaffinity(0)) // jobs))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            environment.setdefault(name, threads)
    return environment


def die_with_parent() -> None:
    """Runs in the child before exec: on Linux the kernel kills it when its worker dies, so no orphan keeps
    training in a directory that the next worker takes over."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


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
    child: subprocess.Popen
    stderr: Path
    stderr_offset: int
    started: float


class Worker:
    """Claims trials and runs each as a child fit, `jobs` at a time, until the study has no trial left to run.

    One thread polls the children: no threads, so each child can safely be tied to this process's life.
    """

    def __init__(self, sweep: Sweep):
        self.sweep = sweep
        self.running: dict[int, Running] = {}

    def run(self) -> None:
        claiming = True
        try:
            while True:
                while claiming and len(self.running) < self.sweep.jobs:
                    claimed = claim(self.sweep)
                    if claimed is None:
                        claiming = False
                    else:
                        self.running[claimed.number] = self.launch(claimed)
                if not self.running:
                    return
                time.sleep(0.1)
                for number, trial in list(self.running.items()):
                    if trial.child.poll() is not None:
                        del self.running[number]
                        try:
                            self.finish(trial)
                        finally:
                            trial.claimed.lock.release()
        except KeyboardInterrupt:
            for trial in self.running.values():  # the trials stay RUNNING: the next run of the command continues them
                trial.child.terminate()
                trial.child.wait()
                trial.claimed.lock.release()
            raise

    def launch(self, claimed: Claim) -> Running:
        directory = trial_dir(self.sweep.directory, claimed.number)
        resume = (trial_run_dir(directory) / "checkpoints" / "last.ckpt").is_file()
        if not resume and (directory / "lightning_logs").exists():
            shutil.rmtree(directory / "lightning_logs")  # cut off before its first checkpoint: start it again
        command = fit_command(self.sweep, directory, claimed.number, claimed.values, resume)
        (directory / "command.txt").write_text(shlex.join(command) + "\n")
        stderr_path = directory / "stderr.log"
        offset = stderr_path.stat().st_size if stderr_path.exists() else 0
        print(f"trial {claimed.number} {'resumed' if resume else 'started'}: {describe(claimed.values)}", flush=True)
        with (directory / "stdout.log").open("ab") as stdout, stderr_path.open("ab") as stderr:
            child = subprocess.Popen(
                command,
                stdout=stdout,
                stderr=stderr,
                env=child_environment(self.sweep.jobs),
                preexec_fn=die_with_parent,  # noqa: PLW1509 (safe: the worker runs no threads)
            )
        return Running(claimed, child, stderr_path, offset, time.monotonic())

    def finish(self, trial: Running) -> None:
        """Tell the study how the trial ended: FAIL with the error's last line, PRUNED, or the objective's value."""
        import optuna

        number, study = trial.claimed.number, trial.claimed.study
        elapsed = time.monotonic() - trial.started
        handle = trial_handle(study, number)
        run = trial_run_dir(trial_dir(self.sweep.directory, number))
        handle.set_user_attr("run_dir", str(run.relative_to(self.sweep.directory)))
        if trial.child.returncode != 0:
            problem = last_line(trial.stderr, trial.stderr_offset)
        elif (pruned_at := handle.user_attrs.get("pruned_at_step")) is not None:
            study.tell(number, state=optuna.trial.TrialState.PRUNED)
            print(f"trial {number} pruned at step {pruned_at}", flush=True)
            return
        else:
            value, problem = objective_value(self.sweep.objective, run)
        if problem:
            handle.set_user_attr("error", problem)
            study.tell(number, state=optuna.trial.TrialState.FAIL)
            print(f"trial {number} failed after {elapsed:.1f} s: {problem}", flush=True)
            return
        study.tell(number, value)
        print(f"trial {number} done in {elapsed:.1f} s: {self.sweep.objective} = {value:.6g}", flush=True)
