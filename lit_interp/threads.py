"""How many intra-op threads a CPU run uses: asked for, set by the environment, or the cores left idle.

PyTorch's intra-op pool spins on every kernel: on an idle machine every core helps these models' steps,
validation and analysis a little, but a thread on a core another process keeps busy thrashes (the same fit
ran 2x slower on 2 threads than on 1 beside two busy loops: docs/benchmarks.md). The thread count also
changes the order of float sums, so a run keeps its count when it resumes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from lit_interp.errors import ConfigError

ENVIRONMENT = "LIT_INTERP_THREADS"  # the count, for every lit_interp command (the same as --threads)
USER_SET = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # a thread count the user chose for PyTorch itself
MAX_THREADS = 512


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str

    def __str__(self) -> str:
        return f"{self.threads} thread{'s' if self.threads != 1 else ''} ({self.reason})"


def available_cores(world_size: int = 1) -> int:
    """The cores this process may use (its CPU affinity), shared among the processes of one machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores // max(world_size, 1))


def parse_count(text: str | None, what: str) -> int | None:
    if text is None or str(text).strip() == "":
        return None
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ConfigError(f"{what}={text!r} is not a thread count; use a whole number such as 1") from None
    if not 1 <= value <= MAX_THREADS:
        raise ConfigError(f"{what}={value} must be between 1 and {MAX_THREADS}")
    return value


def choose_threads(requested: int | None, world_size: int = 1, resumed: int | None = None) -> ThreadChoice:
    """The count: --threads, else LIT_INTERP_THREADS, else a resumed run's own, else OMP_NUM_THREADS / MKL_NUM_THREADS,
    else the available cores (the process's affinity, shared among `world_size` ranks) other processes leave idle."""
    if requested is not None:
        return ThreadChoice(requested, "--threads")
    from_environment = parse_count(os.environ.get(ENVIRONMENT), ENVIRONMENT)
    if from_environment is not None:
        return ThreadChoice(from_environment, ENVIRONMENT)
    if resumed is not None:
        return ThreadChoice(resumed, "the resumed run's, so it continues bit for bit")
    for name in USER_SET:
        count = parse_count(os.environ.get(name), name)
        if count is not None:
            return ThreadChoice(count, name)
    cores = available_cores(world_size)
    idle, busy = idle_cores(cores)
    return ThreadChoice(idle, f"{idle} of {cores} available core(s) idle{busy}; --threads to change")


def busy_elsewhere(samples: int = 5, interval: float = 0.01) -> int | None:
    """Threads other processes are running right now (the kernel's procs_running less this one), the least of a few
    samples so a passing blip does not count; None where /proc/stat cannot tell. Unlike the load average, a process
    that just ended does not count."""
    counts = []
    for sample in range(samples):
        try:
            with open("/proc/stat") as stat:
                running = next(int(line.split()[1]) for line in stat if line.startswith("procs_running "))
        except (OSError, StopIteration, ValueError, IndexError):
            return None
        counts.append(max(0, running - 1))
        if sample + 1 < samples:
            time.sleep(interval)
    return min(counts)


def idle_cores(cores: int) -> tuple[int, str]:
    """Of `cores`, those no other process keeps busy (at least one), and a note when some are busy."""
    busy = busy_elsewhere()
    if not busy:
        return cores, ""
    return max(1, cores - busy), f", {busy} thread(s) of other processes running"


def use_threads(choice: ThreadChoice) -> None:
    import torch

    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
