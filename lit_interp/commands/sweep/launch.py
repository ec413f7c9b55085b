"""A trial's process: forked from a server that imported torch, Lightning and TransformerLens once (Linux), else a
fresh `python -m lit_interp fit`. Either way a process of its own (a crash or a leak stays in it), with its own
logs, environment and exit code, killed by the kernel when its worker dies."""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.util  # its exit handler joins live children: imported first, so ours runs before it
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

# What every trial imports: preloaded once by the fork server, so a trial starts in a fraction of a second
# (the command, the builtin tasks, their analysis, and what a fit imports on its way: TensorBoard's writer, OmegaConf).
PRELOAD = [
    "lit_interp.commands.train",
    "lit_interp.tasks.prev_token_digits",
    "lit_interp.tasks.bos_ints",
    "lit_interp.tasks.affine_recurrence",
    "lit_interp.tasks.induction",
    "lit_interp.tasks.modular_addition",
    "lit_interp.analysis.builtin",
    "lit_interp.images",
    "torch.utils.tensorboard",
    "omegaconf",
]
WARM_ENV = "LIT_INTERP_SWEEP_COLD"  # set to 1: every trial a fresh interpreter, as before
_context: Any = None
_forked: list[Any] = []


def lit_interp_arguments(command: list[str]) -> list[str] | None:
    """`ARGS` of `[python, -m, lit_interp, fit, ...]`, the commands a warm process can run; None for any other."""
    if len(command) >= 4 and command[0] == sys.executable and command[1:4] == ["-m", "lit_interp", "fit"]:
        return command[3:]
    return None


def warm_context():
    """The fork server's context, started on first use with PRELOAD imported (None where there is none)."""
    global _context
    if _context is None and sys.platform == "linux" and os.environ.get(WARM_ENV) != "1":
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
        atexit.register(kill_forked)
    return _context


def start_fork_server(command: list[str]) -> None:
    """Where `command` (a trial's) would run warm, start the fork server's imports now, beside the worker's own
    start-up, rather than at the first trial."""
    if lit_interp_arguments(command) is not None and warm_context() is not None:
        multiprocessing.forkserver.ensure_running()


def kill_forked() -> None:
    """At the worker's exit, its trials die as a cold trial does with its worker (and the exit never waits on one).

    The fork server is killed and reaped too: its interpreter's shutdown would hold the worker's output open for
    seconds after the worker exits, and reaping it counts its trials' CPU time in the worker's, as a cold trial's is.
    """
    for process in _forked:
        if process.is_alive():
            process.kill()
            process.join()
    server = multiprocessing.forkserver._forkserver
    if server._forkserver_pid is not None:
        try:
            os.kill(server._forkserver_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server._stop()  # closes its pipe, reaps it and removes its socket


class ForkedFit:
    """A trial's fit in a process forked from the fork server; answers as `subprocess.Popen` does."""

    def __init__(self, process):
        self.process = process
        self.pid = process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode  # negative when a signal ended it, as Popen's

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        self.process.join(timeout)
        return self.returncode

    def terminate(self) -> None:
        self.process.terminate()

    def kill(self) -> None:
        self.process.kill()


def launch(command: list[str], stdout: Path, stderr: Path, environment: dict[str, str], tied: list[str]):
    """Start `command` with its output appended to the two files; `tied` is the cold form of the same command."""
    arguments, context = lit_interp_arguments(command), warm_context()
    if arguments is None or context is None:
        with stdout.open("ab") as out, stderr.open("ab") as err:
            return subprocess.Popen(tied, stdout=out, stderr=err, env=environment)
    for path in (stdout, stderr):
        path.touch()  # the trial's files exist from its start, as a cold trial's do
    process = context.Process(target=run_forked, args=(arguments, str(stdout), str(stderr), environment, os.getpid()))
    process.start()
    _forked[:] = [*(known for known in _forked if known.is_alive()), process]
    return ForkedFit(process)


def die_with(worker: int) -> None:
    """SIGKILL this process the moment `worker` exits (kill -9 included), as the kernel kills a cold trial.

    The fork server, this process's parent, outlives a killed worker by its interpreter's shutdown, so the
    parent-death signal alone would let the trial write on after its worker is gone: a thread waits on the
    worker's pidfd instead.
    """
    import threading

    try:
        handle = os.pidfd_open(worker)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGKILL)

    def wait() -> None:
        select.select([handle], [], [])  # readable once the worker has exited
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=wait, name="lit_interp-die-with-worker", daemon=True).start()


def run_forked(arguments: list[str], stdout: str, stderr: str, environment: dict[str, str], worker: int) -> None:
    """The forked process: what `python -m lit_interp ARGS` does, with its output in the trial's log files."""
    import ctypes
    import gc

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: dies with the fork server
    die_with(worker)
    gc.disable()  # as `python -m lit_interp`: the start-up objects are frozen once the model is built
    os.environ.clear()
    os.environ.update(environment)
    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = ["python -m lit_interp", *arguments]
    from lit_interp.commands.train import main
    from lit_interp.startup import startup_done

    try:
        main(arguments)  # what `python -m lit_interp fit ...` runs
    finally:
        startup_done()
        sys.stdout.flush()
        sys.stderr.flush()
