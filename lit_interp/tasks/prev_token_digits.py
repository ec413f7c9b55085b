"""Seed 000: predict the previous digit of a random digit string with a 1-layer rotary attention head."""

from __future__ import annotations

from typing import Any

import torch
from typing_extensions import override

from lit_interp.errors import require
from lit_interp.tasks.base import PreviousTokenModule, SyntheticDataModule, build_hooked_transformer

DIGITS = "0123456789"


class DigitsDataModule(SyntheticDataModule):
    """Strings of `n_ctx` uniform random digits; token id = the digit (vocabulary built in)."""

    d_vocab = len(DIGITS)
    first_target_pos = 1

    def __init__(
        self, n_ctx: int = 10, batch_size: int = 64, seed: int = 0, val_batches: int = 4, val_batch_size: int = 512
    ):
        super().__init__(batch_size, seed, val_batches, val_batch_size)
        require(n_ctx >= 2, f"n_ctx={n_ctx} leaves nothing to predict; set data.n_ctx >= 2")
        self.save_hyperparameters()
        self.n_ctx = n_ctx

    @override
    def generate(self, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        return torch.randint(0, self.d_vocab, (batch_size, self.n_ctx), generator=generator, device=generator.device)


class PrevTokenDigitsModule(PreviousTokenModule):
    """1-layer, attention-only, rotary transformer with one head, as in seed 000."""

    def __init__(
        self,
        n_ctx: int = 10,
        d_vocab: int = 10,
        first_target_pos: int = 1,
        d_model: int = 512,
        n_heads: int = 1,
        d_head: int = 8,
        normalization_type: str | None = "LNPre",
        **optimizer_args: Any,
    ):
        super().__init__(n_ctx, d_vocab, first_target_pos, **optimizer_args)
        require(
            d_head % 2 == 0,
            f"d_head={d_head} must be even: rotary embeddings rotate pairs of dimensions; set model.d_head to e.g. 8",
        )
        self.model = build_hooked_transformer(
            n_layers=1,
            d_model=d_model,
            n_heads=n_heads,
            d_head=d_head,
            n_ctx=n_ctx,
            d_vocab=d_vocab,
            attn_only=True,
            normalization_type=normalization_type,
            positional_embedding_type="rotary",
            rotary_dim=d_head,
        )
