"""Seed 002: predict the next vector of an affine recurrence a_j = Σ_k c_k·a_{j-k} + d (MSE head)."""

from __future__ import annotations

from typing import Any

import einops
import torch
import torch.nn.functional as F
from torchmetrics.regression import R2Score
from transformer_lens import HookedTransformer
from typing_extensions import override

from lit_interp.errors import require
from lit_interp.tasks.base import SyntheticDataModule, TaskModule, build_hooked_transformer


def _uniform(low: float, high: float, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device) * (high - low) + low


class AffineRecurrenceDataModule(SyntheticDataModule):
    """Sequences of `seq_len` vectors of dimension `vector_dim`, normalised as in seed 002.

    Per sequence, coefficients c_1..c_order and the constant d are drawn from their bounds and
    the first `order` vectors from (-3, 3); the sequence is divided by its largest norm and
    multiplied by a cap drawn from (1, 2). A batch is `[batch, seq_len, vector_dim]`: the model
    reads the first seq_len - 1 vectors and predicts each next one.
    """

    def __init__(
        self,
        vector_dim: int = 40,
        seq_len: int = 14,
        order: int = 1,
        coefficient_bounds: tuple[float, float] = (-2.0, 2.0),
        constant_bounds: tuple[float, float] = (-2.0, 2.0),
        batch_size: int = 64,
        seed: int = 0,
        val_batches: int = 4,
        val_batch_size: int = 512,
    ):
        super().__init__(batch_size, seed, val_batches, val_batch_size)
        require(vector_dim >= 1, f"vector_dim={vector_dim} must be positive; set data.vector_dim >= 1")
        require(order >= 1, f"order={order} must be >= 1")
        require(
            2 * order < seq_len - 1,
            f"order={order} leaves no position to predict with seq_len={seq_len} (the loss starts at position "
            "2*order); "
            f"set data.order <= {max((seq_len - 2) // 2, 0)} or data.seq_len >= {2 * order + 2}",
        )
        for name, (low, high) in {"coefficient_bounds": coefficient_bounds, "constant_bounds": constant_bounds}.items():
            require(low <= high, f"{name}=({low}, {high}) has low > high; swap them")
        self.save_hyperparameters()
        self.vector_dim, self.seq_len, self.order = vector_dim, seq_len, order
        self.coefficient_bounds, self.constant_bounds = tuple(coefficient_bounds), tuple(constant_bounds)

    @property
    def n_ctx(self) -> int:
        return self.seq_len - 1

    @property
    def d_vocab(self) -> int:
        return self.vector_dim

    @property
    def first_target_pos(self) -> int:
        return 2 * self.order

    @override
    def generate(self, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        shape = (batch_size, self.seq_len, self.vector_dim)
        coefficients = _uniform(*self.coefficient_bounds, (batch_size, self.order), generator)
        constant = _uniform(*self.constant_bounds, (batch_size, self.vector_dim), generator)
        terms = list(_uniform(-3.0, 3.0, (self.order, batch_size, self.vector_dim), generator))
        for _ in range(self.order, self.seq_len):
            previous = torch.stack(terms[-self.order :], dim=1)  # batch order vector, oldest first
            terms.append(constant + einops.einsum(coefficients.flip(-1), previous, "batch k, batch k d -> batch d"))
        sequences = torch.stack(terms, dim=1)
        max_norm = sequences.norm(dim=-1, keepdim=True).amax(dim=1, keepdim=True)
        caps = _uniform(1.0, 2.0, (batch_size, 1, 1), generator)
        return (sequences / max_norm * caps).reshape(shape)


class VectorInputTransformer(HookedTransformer):
    """A HookedTransformer that reads real vectors: `W_E` [d_vocab d_model] is a linear input map.

    `hook_embed` sees `vectors @ W_E`, so caching, hooks and `OV`/`QK` work as for tokens.
    """

    @override
    def input_to_embed(self, input: torch.Tensor, *args: Any, **kwargs: Any):
        embed = self.hook_embed(
            einops.einsum(input, self.W_E, "batch pos d_vocab, d_vocab d_model -> batch pos d_model")
        )
        positions = self.hook_pos_embed(self.pos_embed(input[..., 0]))
        return embed + positions, None, None, None


class AffineRecurrenceModule(TaskModule):
    """Seed 002's model: 3 layers, 8 heads, MLPs and LayerNorm, linear input, MSE on next vector."""

    def __init__(
        self,
        n_ctx: int = 13,
        d_vocab: int = 40,
        first_target_pos: int = 2,
        n_layers: int = 3,
        d_model: int = 128,
        n_heads: int = 8,
        d_head: int = 64,
        d_mlp: int = 512,
        act_fn: str = "gelu_new",
        normalization_type: str | None = "LN",
        **optimizer_args: Any,
    ):
        super().__init__(n_ctx, **optimizer_args)
        require(0 <= first_target_pos < n_ctx, f"first_target_pos={first_target_pos} must lie in [0, n_ctx={n_ctx})")
        self.model = build_hooked_transformer(
            VectorInputTransformer,
            n_layers=n_layers,
            d_model=d_model,
            n_heads=n_heads,
            d_head=d_head,
            d_mlp=d_mlp,
            n_ctx=n_ctx,
            d_vocab=d_vocab,
            act_fn=act_fn,
            normalization_type=normalization_type,
        )
        self.val_r2 = R2Score(multioutput="variance_weighted")
        self.test_r2 = R2Score(multioutput="variance_weighted")

    @override
    def model_input(self, vectors: torch.Tensor) -> torch.Tensor:
        return vectors[:, :-1]

    @override
    def targets(self, vectors: torch.Tensor) -> torch.Tensor:
        return vectors[:, self.hparams.first_target_pos + 1 :]

    @override
    def loss(self, output: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output[:, self.hparams.first_target_pos :].float(), self.targets(vectors))

    @override
    def loss_and_metrics(self, output: torch.Tensor, vectors: torch.Tensor, stage: str) -> torch.Tensor:
        loss = self.loss(output, vectors)
        if stage != "train":
            r2 = self.val_r2 if stage == "val" else self.test_r2
            r2(output[:, self.hparams.first_target_pos :].float().flatten(0, 1), self.targets(vectors).flatten(0, 1))
            self.log(f"{stage}/r2", r2, prog_bar=True)
        return loss
