"""How many intra-op threads a CPU run uses: asked for, set by the environment, or chosen from a step's work.

PyTorch's intra-op pool spins on every kernel; for the small steps of these models more threads add
little on an idle machine and thrash when the cores are shared (docs/benchmarks.md has the figures).
The thread count also changes the order of float sums, so a run keeps its count when it resumes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from lit_interp.errors import ConfigError

ENVIRONMENT = "LIT_INTERP_THREADS"  # the count, for every lit_interp command (the same as --threads)
USER_SET = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # a thread count the user chose for PyTorch itself
# A training step with fewer floating-point operations than this runs on one thread (measured: docs/benchmarks.md).
ONE_THREAD_BELOW_FLOPS = 1e9
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


def step_flops(cfg: Any, batch_size: int) -> float:
    """A rough count of a training step's floating-point operations: forward and backward, 6 per weight and token,
    plus the attention scores and patterns."""
    d_attn = cfg.n_heads * cfg.d_head
    per_layer = 4 * cfg.d_model * d_attn + (0 if cfg.attn_only else 2 * cfg.d_model * (cfg.d_mlp or 0))
    weights = cfg.n_layers * per_layer + 2 * cfg.d_vocab * cfg.d_model
    tokens = batch_size * cfg.n_ctx
    attention = cfg.n_layers * 2 * batch_size * cfg.n_heads * cfg.n_ctx**2 * cfg.d_head
    return 6.0 * tokens * weights + 3.0 * attention


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


def choose_threads(
    requested: int | None, cfg: Any, batch_size: int, world_size: int = 1, resumed: int | None = None
) -> ThreadChoice:
    """The count: --threads, else LIT_INTERP_THREADS, else a resumed run's own, else OMP_NUM_THREADS / MKL_NUM_THREADS,
    else one thread for a small step and every available core that is idle for a larger one."""
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
    flops = step_flops(cfg, batch_size)
    if flops < ONE_THREAD_BELOW_FLOPS:
        return ThreadChoice(1, f"a step is {flops / 1e9:.2g} GFLOP: more threads would spin; --threads to change")
    cores = available_cores(world_size)
    idle = idle_cores(cores)
    busy = f", the others busy (load average {os.getloadavg()[0]:.1f})" if idle < cores else ""
    return ThreadChoice(
        idle, f"a step is {flops / 1e9:.2g} GFLOP, {idle} of {cores} available core(s) idle{busy}; --threads to change"
    )


def idle_cores(cores: int) -> int:
    """Of `cores`, those the last minute's load average leaves idle (at least one): a thread on a busy core thrashes."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores
    return max(1, min(cores, cores - round(load)))


def use_threads(choice: ThreadChoice) -> None:
    import torch

    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
