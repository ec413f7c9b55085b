"""Seeds 001 and 004: [BOS, random ints], predict the previous token, positional embeddings off."""

from __future__ import annotations

from typing import Any

import torch
from typing_extensions import override

from lit_interp.errors import ConfigError, require
from lit_interp.tasks.base import (
    PreviousTokenModule,
    Stream,
    SyntheticDataModule,
    build_hooked_transformer,
    zero_and_freeze_biases,
    zero_and_freeze_pos_embed,
)


class BosIntsDataModule(SyntheticDataModule):
    """`[BOS, a_1 … a_{n_ctx-1}]`, each a_i uniform over every id in [0, d_vocab) except BOS."""

    first_target_pos = 1

    def __init__(
        self,
        n_ctx: int = 10,
        d_vocab: int = 101,
        bos_token: int = 100,
        batch_size: int = 256,
        seed: int = 0,
        val_batches: int = 4,
        val_batch_size: int = 512,
    ):
        super().__init__(batch_size, seed, val_batches, val_batch_size)
        require(n_ctx >= 2, f"n_ctx={n_ctx} leaves nothing to predict; set data.n_ctx >= 2")
        require(
            d_vocab >= 3, f"d_vocab={d_vocab} leaves fewer than two ordinary tokens beside BOS; set data.d_vocab >= 3"
        )
        require(
            0 <= bos_token < d_vocab,
            f"bos_token={bos_token} is outside the vocabulary [0, {d_vocab}); set data.bos_token in that range "
            f"or data.d_vocab >= {bos_token + 1}",
        )
        self.save_hyperparameters()
        self.n_ctx, self.d_vocab, self.bos_token = n_ctx, d_vocab, bos_token

    @override
    def generate(self, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        tokens = torch.randint(
            0, self.d_vocab - 1, (batch_size, self.n_ctx), generator=generator, device=generator.device
        )
        tokens += (tokens >= self.bos_token).long()  # skip over the BOS id
        tokens[:, 0] = self.bos_token
        return tokens


class BosIntsModule(PreviousTokenModule):
    """Seed 001's shape by default (2 layers, 1 head, attention-only, no norm); seed 004 adds MLPs and LayerNorm.

    `biases=False` zeroes and freezes every bias (seed 001's model has none), as `positional_embeddings=False`
    does W_pos.
    """

    @override
    def check_data(self, datamodule: SyntheticDataModule) -> None:
        super().check_data(datamodule)
        bos_token = getattr(datamodule, "bos_token", None)
        batch = datamodule.make_batch(Stream.PROBE, 0, 2)
        if bos_token is None or not bool((batch[:, 0] == bos_token).all()):
            raise ConfigError(
                f"{type(self).__name__} learns sequences that start with BOS, and {type(datamodule).__name__}'s do "
                "not; use lit_interp.tasks.bos_ints.BosIntsDataModule (or data with a bos_token at position 0)"
            )

    def __init__(
        self,
        n_ctx: int = 10,
        d_vocab: int = 101,
        first_target_pos: int = 1,
        n_layers: int = 2,
        d_model: int = 128,
        n_heads: int = 1,
        d_head: int = 128,
        attn_only: bool = True,
        d_mlp: int | None = None,
        act_fn: str = "relu",
        normalization_type: str | None = None,
        positional_embeddings: bool = False,
        biases: bool = True,
        **optimizer_args: Any,
    ):
        super().__init__(n_ctx, d_vocab, first_target_pos, **optimizer_args)
        require(
            attn_only or (d_mlp or 0) > 0,
            f"d_mlp={d_mlp} but attn_only=False needs MLPs; set model.d_mlp, e.g. 4 * d_model",
        )
        self.model = build_hooked_transformer(
            n_layers=n_layers,
            d_model=d_model,
            n_heads=n_heads,
            d_head=d_head,
            n_ctx=n_ctx,
            d_vocab=d_vocab,
            attn_only=attn_only,
            d_mlp=None if attn_only else d_mlp,
            act_fn=act_fn,
            normalization_type=normalization_type,
        )
        if not positional_embeddings:
            zero_and_freeze_pos_embed(self.model)
        if not biases:
            zero_and_freeze_biases(self.model)
