"""The local learning coefficient (LLC) of a model on its training distribution, estimated by devinterp's SGLD."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import importlib.util
import io
import math
import random
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformer_lens import HookedTransformer

from lit_interp.analysis.losses import Task
from lit_interp.tasks.base import Stream, SyntheticDataModule


@dataclass(frozen=True)
class LLCSettings:
    """devinterp's SGLD settings (Lau et al. 2023): the estimate is n_beta x (mean loss over the chains' draws
    - loss at the trained weights), each chain starting at the trained weights."""

    lr: float = 3e-4  # SGLD step size (epsilon)
    n_beta: float = 30.0  # inverse temperature n x beta
    localization: float = 300.0  # gamma: strength of the pull back towards the trained weights
    num_chains: int = 2  # independent chains; their spread is `llc_std`
    num_draws: int = 100  # SGLD steps per chain, every one counted (devinterp's estimator averages them all)
    num_burnin_steps: int = 0  # steps before the first draw (devinterp counts them too)
    batch_size: int = 32  # training sequences per SGLD step
    n_sequences: int = 1024  # training sequences the chains draw their batches from
    seed: int = 0  # seeds the chains' noise and batch order (devinterp's init_seed)


LLC_SETTINGS = LLCSettings()


def devinterp_available() -> bool:
    """True when the optional `devinterp` extra is installed (`pip install -e ".[devinterp]"`)."""
    return importlib.util.find_spec("devinterp") is not None


def wants_learning_coefficient(task: Task) -> bool:
    """A task asks for the estimate with a true `learning_coefficient` hyperparameter (its constructor argument):
    hundreds of SGLD steps per snapshot are worth it only where development is being studied."""
    return bool(getattr(task, "hparams", {}).get("learning_coefficient", False))


def training_sequences(datamodule: SyntheticDataModule, n_sequences: int, device: torch.device | str) -> torch.Tensor:
    """The first `n_sequences` sequences of the training stream (rank 0), in batches of the run's own size.

    Drawn on the CPU, so on a GPU run they are batches of the training distribution rather than the
    very batches it trained on (its generator ran on the GPU)."""
    batch_size = datamodule.batch_size
    batches = [
        datamodule.make_batch(Stream.TRAIN, index, batch_size) for index in range(math.ceil(n_sequences / batch_size))
    ]
    return torch.cat(batches)[:n_sequences].to(device)


@contextlib.contextmanager
def _objects_frozen() -> Iterator[None]:
    """devinterp runs `gc.collect()` around every chain: a full pass over a trainer's heap, most of the
    estimate's time; frozen objects are skipped, and everything made inside is still collected."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def _global_rngs_kept() -> Iterator[None]:
    """devinterp seeds the global torch, numpy and random generators; put them back as they were."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


def local_learning_coefficient(
    model: HookedTransformer, task: Task, sequences: torch.Tensor, settings: LLCSettings = LLC_SETTINGS
) -> dict[str, float]:
    """devinterp's LLC estimate (`devinterp.slt.llc.llc`) of `model` under the task's own loss on `sequences`.

    Every trainable parameter is sampled; frozen ones (zeroed positional embeddings) stay as they are.
    devinterp batches rows of an `input_ids` table: here each row holds a sequence's index, and the loss
    of a batch is the task's loss on those sequences (one value per row, so devinterp's mean is the
    task's loss). The model, the global random generators and the working directory are left as they
    were. Returns `llc_mean` and `llc_std` over the chains, `init_loss` (the loss at the trained weights)
    and the settings; the estimates are NaN when a chain diverged (devinterp stops it).
    """
    from datasets import Dataset
    from devinterp.slt.llc import llc

    if len(sequences) < settings.batch_size:
        raise ValueError(f"{len(sequences)} sequences cannot fill one SGLD batch of {settings.batch_size}")
    sampled = copy.deepcopy(model)
    trainable = {name: None for name, parameter in sampled.named_parameters() if parameter.requires_grad}
    rows = Dataset.from_dict({"input_ids": [[index, index] for index in range(len(sequences))]}).with_format("torch")

    def loss_fn(chain_model: torch.nn.Module, rows: torch.Tensor) -> torch.Tensor:
        batch = sequences[rows[:, 0].to(sequences.device)]
        return task.loss(chain_model(task.model_input(batch)), batch).expand(len(rows), 1)

    with (
        tempfile.TemporaryDirectory(prefix="lit_interp_llc_") as directory,
        _global_rngs_kept(),
        _objects_frozen(),
        torch.enable_grad(),
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stderr(io.StringIO()),  # devinterp draws a progress bar per chain
    ):
        warnings.simplefilter("always")
        result = llc(
            model=sampled,
            dataset=rows,
            observables={},
            param_masks=trainable,
            lr=settings.lr,
            n_beta=settings.n_beta,
            localization=settings.localization,
            num_chains=settings.num_chains,
            num_draws=settings.num_draws,
            num_burnin_steps=settings.num_burnin_steps,
            batch_size=settings.batch_size,
            num_init_loss_batches=max(1, len(sequences) // settings.batch_size),
            init_seed=settings.seed,
            device=str(next(model.parameters()).device),
            loss_fn=loss_fn,
            output_path=Path(directory) / "samples.zarr",
        )
        estimate = {name: float(result[name]) for name in ("llc_mean", "llc_std", "init_loss")}
    if any("Chain failed" in str(warning.message) for warning in caught):
        estimate["llc_mean"] = estimate["llc_std"] = math.nan
    return estimate | dataclasses.asdict(settings)
