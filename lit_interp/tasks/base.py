"""Shared machinery for tasks: seeded on-the-fly data, the HookedTransformer module, losses."""

from __future__ import annotations

import enum
import functools
import math
import re
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, IterableDataset
from torchmetrics.classification import MulticlassAccuracy
from transformer_lens import HookedTransformer, HookedTransformerConfig
from typing_extensions import override

from lit_interp.errors import ConfigError, require
from lit_interp.memory import declared_parameters, require_batch_fits, require_fits

# Values the data and the model share: set once on the data, linked into the model's constructor by the CLI.
LINKED_ARGUMENTS = ("n_ctx", "d_vocab", "first_target_pos")


class Stream(enum.IntEnum):
    """The independent data streams of a task: batch i of each is seeded from (seed, stream, rank, i)."""

    TRAIN = 0
    VAL = 1
    TEST = 2
    PROBE = 3  # the analysis snapshots' fixed probe batches, never trained on
    LINEAR_PROBE = 4  # the linear probes' own, larger set: only its activations are read


def batch_generator(
    seed: int, stream: Stream, rank: int, index: int, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A generator whose state is a pure function of (seed, stream, rank, index)."""
    state = np.random.SeedSequence([seed, int(stream), rank, index]).generate_state(1, np.uint64)[0]
    generator = torch.Generator(device=device)
    generator.manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)
    return generator


class _StepIndices(IterableDataset):
    """Yields batch indices start, start+1, ...: the batch itself is built on the device."""

    def __init__(self, start: int):
        self.start = start

    def __iter__(self):
        index = self.start
        while True:
            yield torch.tensor(index)
            index += 1


class _FixedIndices(Dataset):
    """Batch indices 0..n-1 of a fixed evaluation set (map-style so DDP ranks split it)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor(index)


class SyntheticDataModule(pl.LightningDataModule):
    """Batches generated on the fly, batch `i` on rank `r` a pure function of (seed, r, i).

    The dataloaders carry only batch indices; `on_after_batch_transfer` turns an index into a
    batch on the training device, so GPU runs never generate on the host and copy. The index of
    the next training batch is checkpointed, so a resumed run sees the batches the
    uninterrupted run would have seen.
    """

    # Values the model must agree with; the CLI links them into the module's constructor.
    n_ctx: int
    d_vocab: int
    first_target_pos: int

    def __init__(self, batch_size: int, seed: int, val_batches: int, val_batch_size: int):
        super().__init__()
        require(batch_size > 0, f"batch_size={batch_size} must be positive; set data.batch_size >= 1")
        require(val_batches > 0, f"val_batches={val_batches} must be positive; set data.val_batches >= 1")
        require(val_batch_size > 0, f"val_batch_size={val_batch_size} must be positive; set data.val_batch_size >= 1")
        require(seed >= 0, f"seed={seed} must be >= 0; set data.seed to a non-negative integer")
        for name, value in {"batch_size": batch_size, "val_batch_size": val_batch_size}.items():
            require(
                value <= 2**20, f"{name}={value} is more sequences than one step can hold; set data.{name} <= {2**20}"
            )
        self.batch_size = batch_size
        self.seed = seed
        self.val_batches = val_batches
        self.val_batch_size = val_batch_size
        self.next_train_index = 0

    def generate(self, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        """One batch drawn from `generator` (on the generator's device)."""
        raise NotImplementedError

    def make_batch(
        self, stream: Stream, index: int, batch_size: int, device: torch.device | str = "cpu", rank: int = 0
    ) -> torch.Tensor:
        """Training batches are drawn on the training device; validation, test and probe batches on the CPU
        and moved, so they are the same numbers on every device (a GPU run's snapshots reproduce on CPU)."""
        if stream == Stream.TRAIN:
            return self.generate(batch_generator(self.seed, stream, rank, index, device), batch_size)
        return self.generate(batch_generator(self.seed, stream, rank, index, "cpu"), batch_size).to(device)

    @override
    def train_dataloader(self) -> DataLoader:
        return DataLoader(_StepIndices(self.next_train_index), batch_size=None)

    @override
    def val_dataloader(self) -> DataLoader:
        return DataLoader(_FixedIndices(self.val_batches), batch_size=None)

    @override
    def test_dataloader(self) -> DataLoader:
        return DataLoader(_FixedIndices(self.val_batches), batch_size=None)

    @override
    def on_before_batch_transfer(self, batch: torch.Tensor, dataloader_idx: int) -> torch.Tensor:
        self._index = int(batch)  # read on the host, before the transfer: no device sync per step
        return batch

    @override
    def on_after_batch_transfer(self, batch: torch.Tensor, dataloader_idx: int) -> torch.Tensor:
        index = self.__dict__.pop("_index", None)
        index = int(batch) if index is None else index
        stage = self.trainer.state.stage if self.trainer is not None else None
        if stage == "train":
            self.next_train_index = index + 1
            return self.make_batch(Stream.TRAIN, index, self.batch_size, batch.device, self.trainer.global_rank)
        stream = Stream.TEST if stage == "test" else Stream.VAL
        return self.make_batch(stream, index, self.val_batch_size, batch.device)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"next_train_index": self.next_train_index}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.next_train_index = int(state_dict["next_train_index"])


def zero_and_freeze_pos_embed(model: HookedTransformer) -> None:
    """HookedTransformer has no 'no positional embedding' option: zero W_pos and stop its gradient."""
    with torch.no_grad():
        model.pos_embed.W_pos.zero_()
    model.pos_embed.W_pos.requires_grad_(False)


# Every bias of a HookedTransformer: attention b_Q b_K b_V b_O, MLP b_in b_out, the unembedding's b_U, each norm's b.
BIAS_NAME = re.compile(r"(^|\.)(b|b_\w+)$")


def zero_and_freeze_biases(model: HookedTransformer) -> list[str]:
    """HookedTransformer has no 'no biases' option: zero every bias and stop its gradient; returns their names.

    A frozen parameter never reaches the optimizer (`configure_optimizers` takes only those that
    need a gradient), so weight decay and resumed optimizer state cannot move it either.
    """
    names = []
    for name, parameter in model.named_parameters():
        if BIAS_NAME.search(name):
            with torch.no_grad():
                parameter.zero_()
            parameter.requires_grad_(False)
            names.append(name)
    return names


def lr_multiplier(step: int, warmup_steps: int, decay_steps: int = 0, min_lr_ratio: float = 0.0) -> float:
    """The factor on `lr` at optimizer step `step`: linear warmup over `warmup_steps`, then, if
    `decay_steps` > 0, cosine decay to `min_lr_ratio` at step `decay_steps`, held after that."""
    factor = min((step + 1) / warmup_steps, 1.0) if warmup_steps else 1.0
    if decay_steps and step >= warmup_steps:
        progress = min((step - warmup_steps) / (decay_steps - warmup_steps), 1.0)
        factor *= min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


class TaskModule(pl.LightningModule):
    """A LightningModule owning a `HookedTransformer` (`self.model`) and its AdamW recipe.

    A task subclass takes its own constructor arguments plus `**optimizer_args` (passed on here),
    assigns `self.model`, and defines
    `model_input`, `targets`, `loss` and `loss_and_metrics`; train, validation and test share
    `shared_step`.
    """

    model: HookedTransformer

    def __init__(
        self,
        n_ctx: int,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        decay_steps: int = 0,
        min_lr_ratio: float = 0.0,
    ):
        """The optimizer recipe lives here once: a task's constructor takes its own arguments and passes
        `**optimizer_args` on (jsonargparse follows them, so configs and --print_config list every one)."""
        super().__init__()
        require(n_ctx >= 2, f"n_ctx={n_ctx} leaves nothing to predict; set a context length >= 2")
        require(lr > 0, f"lr={lr} must be positive; set model.lr to e.g. 1e-3")
        require(weight_decay >= 0, f"weight_decay={weight_decay} must be >= 0; set model.weight_decay to e.g. 0.0")
        require(warmup_steps >= 0, f"warmup_steps={warmup_steps} must be >= 0; use 0 for no warmup")
        require(
            decay_steps >= 0, f"decay_steps={decay_steps} must be >= 0; use 0 for a constant learning rate after warmup"
        )
        require(
            decay_steps == 0 or decay_steps > warmup_steps,
            f"decay_steps={decay_steps} must exceed warmup_steps={warmup_steps}; set model.decay_steps > "
            "model.warmup_steps or 0",
        )
        require(0 <= min_lr_ratio <= 1, f"min_lr_ratio={min_lr_ratio} must lie in [0, 1]; e.g. 0.0 to decay to zero")
        require(
            len(betas) == 2 and all(0 <= b < 1 for b in betas),
            f"betas={list(betas)} must be two values in [0, 1); e.g. [0.9, 0.95]",
        )
        # Every constructor argument of the whole class chain, the recipe's defaults included; a subclass
        # calling save_hyperparameters() again only adds to them (Lightning updates hparams).
        self.save_hyperparameters()

    def model_input(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def targets(self, batch: torch.Tensor) -> torch.Tensor:
        """What positions first_target_pos.. of the model's output should predict."""
        raise NotImplementedError

    def loss_and_metrics(self, output: torch.Tensor, batch: torch.Tensor, stage: str) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, output: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """The task's loss on a model output: what analysis ablations compare against."""
        raise NotImplementedError

    def check_data(self, datamodule: SyntheticDataModule) -> None:
        """Refuse data this task cannot learn from, in one line naming both: by default, two sequences of the
        data must pass through the model and the loss. A task that needs more (BOS at position 0) checks it too."""
        batch = datamodule.make_batch(Stream.PROBE, 0, 2, device=self.device)
        try:
            with torch.no_grad():
                self.loss(self(batch), batch)
        except (RuntimeError, IndexError, ValueError, TypeError) as error:
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise ConfigError(
                f"{type(self).__name__} cannot train on the batches of {type(datamodule).__name__} ({reason}); "
                "pair the model with its task's data module"
            ) from None

    def analyses(self) -> list[Analysis]:  # noqa: F821 (lit_interp.analysis.registry imports this module)
        """This task's own analyses (`lit_interp.analysis.registry.Analysis`), run beside the built-in ones."""
        return []

    @override
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(self.model_input(batch))

    @override
    def _apply(self, fn, *args: Any, **kwargs: Any):
        # HookedTransformer.forward moves the residual stream to `cfg.device` before every block;
        # Lightning moves weights with `.to()` on this module, which bypasses TransformerLens's own
        # `.to()`, so keep `cfg.device` on the weights' device or CUDA runs mix devices.
        super()._apply(fn, *args, **kwargs)
        model = self.__dict__.get("_modules", {}).get("model")
        if isinstance(model, HookedTransformer):
            model.cfg.device = str(model.W_U.device)
        return self

    def shared_step(self, batch: torch.Tensor, stage: str) -> torch.Tensor:
        loss = self.loss_and_metrics(self(batch), batch, stage)
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=stage != "train")
        return loss

    @override
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "train")

    @override
    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.shared_step(batch, "val")

    @override
    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.shared_step(batch, "test")

    @override
    def configure_optimizers(self):
        hparams = self.hparams
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            trainable, lr=hparams.lr, betas=tuple(hparams.betas), weight_decay=hparams.weight_decay
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            functools.partial(
                lr_multiplier,
                warmup_steps=hparams.warmup_steps,
                decay_steps=hparams.decay_steps,
                min_lr_ratio=hparams.min_lr_ratio,
            ),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainer = self._trainer
        checkpoint["lit_interp"] = {
            "module_class": f"{type(self).__module__}.{type(self).__qualname__}",
            "world_size": trainer.world_size if trainer is not None else 1,
            "threads": torch.get_num_threads(),  # it changes float sums: a resumed run keeps it
            # Each logger's own run, so a resumed run continues it (TensorBoard and CSV by directory).
            "loggers": {
                type(logger).__name__: str(logger.version)
                for logger in (trainer.loggers if trainer else [])
                if logger.version is not None
            },
        }


class TokenPredictionModule(TaskModule):
    """Token tasks: cross-entropy of the logits from `first_target_pos` on against `targets`, accuracy on validation."""

    def __init__(self, n_ctx: int, d_vocab: int, **optimizer_args: Any):
        super().__init__(n_ctx, **optimizer_args)
        require(d_vocab >= 2, f"d_vocab={d_vocab} must be >= 2")
        self.val_acc = MulticlassAccuracy(num_classes=d_vocab, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=d_vocab, average="micro")

    @override
    def loss(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        scored = logits[:, self.hparams.first_target_pos :].float()
        return F.cross_entropy(scored.flatten(0, 1), self.targets(tokens).flatten())

    @override
    def loss_and_metrics(self, logits: torch.Tensor, tokens: torch.Tensor, stage: str) -> torch.Tensor:
        loss = self.loss(logits, tokens)
        if stage != "train":
            accuracy = self.val_acc if stage == "val" else self.test_acc
            accuracy(logits[:, self.hparams.first_target_pos :].argmax(-1), self.targets(tokens))
            self.log(f"{stage}/acc", accuracy, prog_bar=True)
        return loss


class PreviousTokenModule(TokenPredictionModule):
    """Token tasks predicting the previous token: the model reads every token, position p is scored on token p - 1."""

    def __init__(self, n_ctx: int, d_vocab: int, first_target_pos: int, **optimizer_args: Any):
        """`optimizer_args`: TaskModule's recipe (lr, weight_decay, betas, warmup_steps, decay_steps, min_lr_ratio)."""
        super().__init__(n_ctx, d_vocab, **optimizer_args)
        require(1 <= first_target_pos < n_ctx, f"first_target_pos={first_target_pos} must lie in [1, n_ctx={n_ctx})")

    @override
    def model_input(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens

    @override
    def targets(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, self.hparams.first_target_pos - 1 : -1]


def check_fits_in_memory(model: HookedTransformer, batch_size: int, what: str = "data.batch_size") -> None:
    """One training step of `batch_size` sequences through `model` must fit in this machine's memory."""
    require_batch_fits(model.cfg, batch_size, what)


def build_hooked_transformer(
    model_class: type[HookedTransformer] = HookedTransformer, **config: Any
) -> HookedTransformer:
    """A freshly initialised HookedTransformer on CPU (Lightning moves it to the device)."""
    for name in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp"):
        value = config.get(name)
        require(value is None or value >= 1, f"{name}={value} must be >= 1; set model.{name} to a positive size")
    require(
        config.get("n_ctx", 1) <= 2**16,
        f"n_ctx={config.get('n_ctx')} is longer than lit_interp supports; use a context of at most {2**16}",
    )
    sizes = {key: config.get(key) for key in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab")}
    require_fits(4 * declared_parameters(config), f"a model of sizes {sizes}", "choose smaller sizes")
    try:
        return model_class(HookedTransformerConfig(device="cpu", **config))
    except (AssertionError, ValueError) as error:
        raise ConfigError(f"invalid model shape: {error}; check the model sizes in the config") from None
