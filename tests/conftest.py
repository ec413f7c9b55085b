"""Shared fixtures: seeded RNGs, runs isolated in a temporary directory, tiny-model CLI helpers."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

from lit_interp.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (setup.cfg): the fast suite on one worker per core this process may use; the slow suite in this one
    process (its fault runs time their kills, and each of its trainings wants the whole machine)."""
    return cores() if config.option.markexpr == "not slow" else 0


if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    # Each worker (and every fit it starts) on its share of the cores: the thread policy would follow the other
    # workers' load from one run to the next, and runs a test compares bit for bit must share a thread count.
    SHARE = str(max(1, cores() // workers))
    for name in ("LIT_INTERP_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, SHARE)
    torch.set_num_threads(int(os.environ["LIT_INTERP_THREADS"]))

MODULAR_ADDITION_TINY = [
    "--model.init_args.d_model=16",
    "--model.init_args.d_head=4",
    "--model.init_args.d_mlp=32",
    "--data.init_args.p=23",
]
# Overrides that shrink each config's model so a run takes seconds on 2 cores.
TINY = {
    "prev_token_digits": ["--model.init_args.d_model=16"],
    "bos_ints_attn_only": ["--model.init_args.d_model=16", "--model.init_args.d_head=16"],
    "bos_ints_mlp": ["--model.init_args.d_model=16", "--model.init_args.d_head=16", "--model.init_args.d_mlp=32"],
    "affine_recurrence": [
        "--model.init_args.d_model=16",
        "--model.init_args.n_heads=2",
        "--model.init_args.d_head=8",
        "--model.init_args.d_mlp=32",
    ],
    "modular_addition": MODULAR_ADDITION_TINY,
    "modular_addition_cpu": MODULAR_ADDITION_TINY,
    # The learning coefficient off: hundreds of SGLD steps at every expensive snapshot (tested on its own).
    "induction": [
        "--model.init_args.d_model=16",
        "--model.init_args.d_head=8",
        "--model.init_args.learning_coefficient=false",
    ],
}
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(autouse=True)
def seeded_and_isolated(tmp_path, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.chdir(tmp_path)


def run_lit_interp(*args: str) -> None:
    main([*args, *QUIET])


def tiny_fit(config: str, *args: str) -> None:
    run_lit_interp("fit", "--config", str(CONFIGS / f"{config}.yaml"), *TINY[config], *args)


@contextlib.contextmanager
def inside(directory: Path):
    """Run in `directory` (module-scoped fixtures cannot use the autouse chdir), then come back."""
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        yield directory
    finally:
        os.chdir(cwd)
