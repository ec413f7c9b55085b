"""Guards that end a run cleanly: a non-finite training loss, and Ctrl-C / SIGTERM with a resumable checkpoint."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lit_interp.errors import require


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stops before any checkpoint keeps the bad weights."""


class FiniteLossGuard(Callback):
    """Stops training when the loss is not finite, checked every `check_every_n_steps` steps and at every
    step a checkpoint is written, so no checkpoint holds diverged weights.

    Checking only at that cadence keeps the host sync off most GPU steps. The decision is reduced over
    ranks, so every rank stops at the same step.
    """

    def __init__(self, check_every_n_steps: int | None = None):
        super().__init__()
        require(
            check_every_n_steps is None or check_every_n_steps >= 1,
            f"check_every_n_steps={check_every_n_steps} must be >= 1",
        )
        self.check_every_n_steps = check_every_n_steps
        self._last_loss: torch.Tensor | None = None

    def _due(self, trainer: pl.Trainer) -> bool:
        step = trainer.global_step
        every = self.check_every_n_steps or trainer.log_every_n_steps or 1
        checkpoint_steps = [
            c._every_n_train_steps for c in trainer.checkpoint_callbacks if getattr(c, "_every_n_train_steps", 0) >= 1
        ]
        return step % every == 0 or any(step % n == 0 for n in checkpoint_steps) or step == trainer.max_steps

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._last_loss = loss.detach()
        if self._due(trainer):
            self.check(trainer)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer)  # before StepCheckpoint's final save (checkpoint callbacks run last)

    def check(self, trainer: pl.Trainer) -> None:
        """The last loss and every weight finite on all ranks, or NonFiniteLossError (one reduction, one host sync)."""
        module = trainer.lightning_module
        weights_finite = all(bool(torch.isfinite(p).all()) for p in module.parameters())
        loss_finite = self._last_loss is None or bool(torch.isfinite(self._last_loss).all())
        if trainer.strategy.reduce_boolean_decision(weights_finite and loss_finite, all=True):
            return
        what = f"train/loss is {self._last_loss.item()}" if not loss_finite else "the weights are no longer finite"
        raise NonFiniteLossError(
            f"{what} at step {trainer.global_step}: the run diverged and was stopped (the last checkpoint before it "
            "is kept); lower model.init_args.lr or set trainer.gradient_clip_val"
        )


# Which signal asked the run to stop, so the CLI exits with the shell's code for it (130 for Ctrl-C).
INTERRUPTED_BY: dict[str, int | None] = {"signal": None}


class GracefulInterrupt(Callback):
    """The first Ctrl-C asks for what SIGTERM asks: Lightning finishes the current step and raises its
    SIGTERMException, and StepCheckpoint writes a resumable last.ckpt. A second Ctrl-C interrupts at once.

    A validation that is running when the signal comes is finished first (Lightning would stop it
    half-way, and the resumed run would skip that validation point for good).
    """

    def __init__(self):
        super().__init__()
        self._deferred = False

    @override
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        connector = trainer._signal_connector  # Lightning checks it right after this hook, mid-validation
        if connector.received_sigterm and trainer.training is False and trainer.state.fn == "fit":
            connector.received_sigterm, self._deferred = False, True

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._deferred:  # the training loop raises Lightning's SIGTERMException after this step
            trainer._signal_connector.received_sigterm, self._deferred = True, False

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.getsignal(signal.SIGINT)

        def first_interrupt(signum, frame) -> None:
            INTERRUPTED_BY["signal"] = signal.SIGINT
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGINT, first_interrupt)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.teardown(trainer, pl_module, "fit")

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        previous = self.__dict__.pop("_previous", None)
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)
