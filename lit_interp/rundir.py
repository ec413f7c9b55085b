"""Run directories: a race-free new `version_N`, one writer at a time (a lock naming its owner), a task's latest run."""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
from pathlib import Path

from lit_interp.errors import ConfigError

LOCK_FILES = (".lock", ".owner")
# Set by the launching process for the ranks Lightning starts: they join its run instead of making one.
RUN_DIR_ENV = "LIT_INTERP_RUN_DIR"
# A process's place in a distributed run, as launchers and clusters set it (torchrun, Lightning's own launcher
# and a cluster script: RANK, LOCAL_RANK, NODE_RANK or GROUP_RANK; SLURM's srun: SLURM_PROCID). Any of them
# non-zero: the process is not the run's first, which alone makes and locks the run directory.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def owns_run(environ=os.environ) -> bool:
    """Whether this process is global rank 0 of its run (or the process that launches it): no rank says otherwise."""
    ranks = [environ.get(name, "0").strip() for name in RANK_VARIABLES]
    return all(not rank.isdigit() or int(rank) == 0 for rank in ranks)


def next_version(root: Path) -> Path:
    """The `version_N` a new run under `root` would get now (nothing is created)."""
    versions = [v for v in (version_number(p) for p in root.glob("version_*")) if v is not None]
    return root / f"version_{max(versions, default=-1) + 1}"


def version_number(path: Path) -> int | None:
    match = re.fullmatch(r"version_(\d+)", path.name)
    return int(match.group(1)) if match else None


def create_new_run(root: Path) -> Path:
    """Make `root/version_N` with N one past the highest existing; `mkdir` is atomic, so two processes
    starting at once get different versions."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"cannot create the run directory under {root}: {error.strerror or error}; pass a writable "
            "--trainer.default_root_dir"
        ) from None
    while True:
        versions = [v for v in (version_number(p) for p in root.glob("version_*")) if v is not None]
        candidate = root / f"version_{max(versions, default=-1) + 1}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue  # another process took it first
        except OSError as error:
            raise ConfigError(
                f"cannot create the run directory {candidate}: {error.strerror or error}; pass a writable "
                "--trainer.default_root_dir"
            ) from None


class RunLock:
    """An exclusive lock on a run directory for the life of the process that writes into it."""

    def __init__(self, run_dir: Path):
        from filelock import FileLock

        self.run_dir = run_dir
        self._lock = FileLock(str(run_dir / ".lock"), timeout=0)

    def acquire(self) -> RunLock:
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            raise ConfigError(
                f"run directory {self.run_dir} is in use by {self.owner()}; wait for it to finish, or start a "
                "new run without --ckpt_path"
            ) from None
        except OSError as error:
            raise ConfigError(
                f"cannot lock the run directory {self.run_dir}: {error.strerror or error}; pass a writable "
                "--trainer.default_root_dir"
            ) from None
        (self.run_dir / ".owner").write_text(f"process {os.getpid()} on {socket.gethostname()}: {' '.join(sys.argv)}\n")
        return self

    def owner(self) -> str:
        try:
            return (self.run_dir / ".owner").read_text().strip()
        except OSError:
            return "another process"

    def release(self) -> None:
        if self._lock.is_locked:
            (self.run_dir / ".owner").unlink(missing_ok=True)
            self._lock.release()


def remove_if_unused(run_dir: Path) -> None:
    """Remove a run directory this process created when nothing but its lock files were written."""
    if run_dir.is_dir() and all(path.name in LOCK_FILES for path in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)
