"""Shared fixtures: seeded RNGs, runs isolated in a temporary directory, tiny-model CLI helpers."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

from lit_interp.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

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
