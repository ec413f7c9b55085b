"""Nanda et al. 2023: `[a, b, =]` -> (a + b) mod p, trained full-batch on a fixed train/test split of all p² pairs."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from lit_interp.errors import require
from lit_interp.tasks.base import Stream, SyntheticDataModule, TaskModule, batch_generator, build_hooked_transformer


def pair_tokens(pair_ids: torch.Tensor, p: int) -> torch.Tensor:
    """`[a, b, =]` for each pair id a·p + b; the `=` token is id p."""
    return torch.stack([pair_ids // p, pair_ids % p, torch.full_like(pair_ids, p)], dim=1)


def train_test_split(p: int, train_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The pair ids a·p + b of the training and test pairs, each sorted: a shuffle of all p² pairs drawn from the
    training stream's first generator (full-batch training draws nothing else from it), the first
    round(train_fraction·p²) of it for training."""
    order = torch.randperm(p * p, generator=batch_generator(seed, Stream.TRAIN, 0, 0))
    n_train = round(train_fraction * p * p)
    return order[:n_train].sort().values, order[n_train:].sort().values


class ModularAdditionDataModule(SyntheticDataModule):
    """Every training step is the whole training split; validation and test are the held-out pairs.

    The split is data: a pure function of (p, train_fraction, seed), so a datamodule rebuilt from the
    hyperparameters has it, and it is also stored in every checkpoint (`state_dict`) and restored from
    there. The probe stream draws pairs uniformly from all p² pairs.
    """

    n_ctx = 3
    first_target_pos = 2  # the `=` position predicts the answer

    def __init__(self, p: int = 113, train_fraction: float = 0.3, seed: int = 0, val_batch_size: int = 16384):
        require(
            p >= 3 and p % 2 == 1,
            f"p={p} must be odd and >= 3: the Fourier analyses pair a cosine with a sine for each of the (p-1)/2 "
            "frequencies; use a prime such as the paper's 113",
        )
        require(0 < train_fraction < 1, f"train_fraction={train_fraction} must lie in (0, 1); the paper uses 0.3")
        n_train = round(train_fraction * p * p)
        require(
            1 <= n_train < p * p,
            f"train_fraction={train_fraction} of p²={p * p} pairs leaves {n_train} for training; "
            "set data.train_fraction so both splits hold a pair",
        )
        require(val_batch_size > 0, f"val_batch_size={val_batch_size} must be positive; set data.val_batch_size >= 1")
        val_batches = math.ceil((p * p - n_train) / val_batch_size)
        super().__init__(n_train, seed, val_batches, val_batch_size)
        self.save_hyperparameters()
        self.p, self.train_fraction = p, train_fraction
        self.train_pairs, self.test_pairs = train_test_split(p, train_fraction, seed)

    @property
    def d_vocab(self) -> int:
        return self.p + 1

    def generate(self, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        return pair_tokens(torch.randint(0, self.p * self.p, (batch_size,), generator=generator), self.p)

    def make_batch(
        self, stream: Stream, index: int, batch_size: int, device: torch.device | str = "cpu", rank: int = 0
    ) -> torch.Tensor:
        """TRAIN: the whole training split at every index and on every rank (so DDP averages full-batch gradients);
        VAL and TEST: chunk `index` of the held-out pairs; PROBE: `batch_size` pairs drawn from all p²."""
        if stream == Stream.TRAIN:
            return pair_tokens(self.train_pairs, self.p).to(device)
        if stream in (Stream.VAL, Stream.TEST):
            return pair_tokens(self.test_pairs[index * batch_size : (index + 1) * batch_size], self.p).to(device)
        return super().make_batch(stream, index, batch_size, device, rank)

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"train_pairs": self.train_pairs.clone(), "test_pairs": self.test_pairs.clone()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if "train_pairs" in state_dict:
            train, test = state_dict["train_pairs"], state_dict["test_pairs"]
            require(
                len(train) + len(test) == self.p * self.p and len(train) == len(self.train_pairs),
                f"the checkpoint's split has {len(train)} + {len(test)} pairs, but p={self.p} and "
                f"train_fraction={self.train_fraction} make {len(self.train_pairs)} + {len(self.test_pairs)}; "
                "resume with the run's own data settings",
            )
            self.train_pairs, self.test_pairs = train.clone(), test.clone()


class ModularAdditionModule(TaskModule):
    """The paper's 1-layer transformer: 4 heads of 32, d_model 128, d_mlp 512, ReLU, no LayerNorm, biases frozen at 0.

    Cross-entropy (in float64, as the paper computes it) on the answer at the `=` position only;
    `train/acc` is the whole training split's accuracy, `val/acc` the held-out pairs'.
    """

    def __init__(
        self,
        n_ctx: int = 3,
        d_vocab: int = 114,
        first_target_pos: int = 2,
        n_layers: int = 1,
        d_model: int = 128,
        n_heads: int = 4,
        d_head: int = 32,
        d_mlp: int = 512,
        act_fn: str = "relu",
        normalization_type: str | None = None,
        biases: bool = False,
        **optimizer_args: Any,
    ):
        """`optimizer_args`: TaskModule's recipe (lr, weight_decay, betas, warmup_steps, decay_steps, min_lr_ratio)."""
        super().__init__(n_ctx, **optimizer_args)
        require(n_ctx == 3, f"n_ctx={n_ctx} but modular addition reads [a, b, =]; leave n_ctx linked to the data (3)")
        require(first_target_pos == 2, f"first_target_pos={first_target_pos} but the answer is read at `=` (2)")
        require(d_vocab >= 4, f"d_vocab={d_vocab} must be p + 1 for an odd p >= 3; link it to the data")
        self.p = d_vocab - 1
        self.model = build_hooked_transformer(
            n_layers=n_layers,
            d_model=d_model,
            n_heads=n_heads,
            d_head=d_head,
            d_mlp=d_mlp,
            n_ctx=n_ctx,
            d_vocab=d_vocab,
            d_vocab_out=self.p,
            act_fn=act_fn,
            normalization_type=normalization_type,
        )
        if not biases:  # as the TransformerLens grokking reproduction: fewer terms to interpret
            for name, parameter in self.model.named_parameters():
                if name.split(".")[-1].startswith("b_"):
                    parameter.requires_grad_(False)
        self.val_acc = MulticlassAccuracy(num_classes=self.p, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=self.p, average="micro")

    def model_input(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens

    def targets(self, tokens: torch.Tensor) -> torch.Tensor:
        """`[batch 1]`: (a + b) mod p, the answer at the `=` position."""
        return ((tokens[:, 0] + tokens[:, 1]) % self.p)[:, None]

    def loss(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        # float64, as the paper: near zero loss, float32's log-softmax lacks the precision the slow late phase needs.
        return F.cross_entropy(logits[:, -1].double(), self.targets(tokens)[:, 0])

    def loss_and_metrics(self, logits: torch.Tensor, tokens: torch.Tensor, stage: str) -> torch.Tensor:
        loss = self.loss(logits, tokens)
        predictions, targets = logits[:, -1].argmax(-1), self.targets(tokens)[:, 0]
        if stage == "train":  # the whole training split, every step: the batch is the metric
            self.log("train/acc", (predictions == targets).float().mean(), prog_bar=True)
        else:
            accuracy = self.val_acc if stage == "val" else self.test_acc
            accuracy(predictions, targets)
            self.log(f"{stage}/acc", accuracy, prog_bar=True)
        return loss
