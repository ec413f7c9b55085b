"""Induction heads (Olsson et al. 2022): `[BOS, noise, r, r]`, next-token loss, a 2-layer attention-only model."""

from __future__ import annotations

from typing import Any

import torch
from typing_extensions import override

from lit_interp.errors import require
from lit_interp.tasks.base import SyntheticDataModule, TokenPredictionModule, build_hooked_transformer


class InductionDataModule(SyntheticDataModule):
    """`[BOS, n_1 … n_k, r_1 … r_L, r_1 … r_L]` of n_ctx + 1 tokens: a random segment r repeated once.

    k, the number of noise tokens before the segment, is uniform in [0, max_noise_len] per sequence,
    and r fills what is left (L = (n_ctx + 1 - prefix - k) // 2, one random token at the end when that
    is odd). With max_noise_len > 0 the distance between the two copies varies, so only a head that
    matches content, not one that looks a fixed number of positions back, predicts the second copy.
    Every token but BOS is uniform over the ordinary ids. The model reads the first n_ctx tokens and
    predicts each next one; bos_token=None leaves BOS out.
    """

    first_target_pos = 0

    def __init__(
        self,
        n_ctx: int = 48,
        d_vocab: int = 64,
        bos_token: int | None = 0,
        max_noise_len: int = 0,
        batch_size: int = 64,
        seed: int = 0,
        val_batches: int = 4,
        val_batch_size: int = 512,
    ):
        super().__init__(batch_size, seed, val_batches, val_batch_size)
        prefix = int(bos_token is not None)
        require(
            d_vocab >= 2 + prefix,
            f"d_vocab={d_vocab} leaves fewer than two ordinary tokens; set data.d_vocab >= {2 + prefix}",
        )
        require(
            bos_token is None or 0 <= bos_token < d_vocab,
            f"bos_token={bos_token} is outside the vocabulary [0, {d_vocab}); set data.bos_token in that range, "
            "or null for no BOS",
        )
        require(max_noise_len >= 0, f"max_noise_len={max_noise_len} must be >= 0; 0 repeats r right after BOS")
        body = n_ctx + 1 - prefix
        require(
            body - max_noise_len >= 4,
            f"max_noise_len={max_noise_len} with n_ctx={n_ctx} can leave a segment shorter than 2 tokens; "
            f"set data.max_noise_len <= {max(body - 4, 0)} or data.n_ctx >= {max_noise_len + 3 + prefix}",
        )
        self.save_hyperparameters()
        self.n_ctx, self.d_vocab, self.bos_token, self.max_noise_len = n_ctx, d_vocab, bos_token, max_noise_len

    @property
    def prefix_len(self) -> int:
        return int(self.bos_token is not None)

    @override
    def generate(self, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        device, length, prefix = generator.device, self.n_ctx + 1, self.prefix_len
        n_ordinary = self.d_vocab - prefix
        tokens = torch.randint(0, n_ordinary, (batch_size, length), generator=generator, device=device)
        if self.bos_token is not None:
            tokens += (tokens >= self.bos_token).long()  # skip over the BOS id
        noise = torch.randint(0, self.max_noise_len + 1, (batch_size, 1), generator=generator, device=device)
        segment = (length - prefix - noise) // 2
        offset = torch.arange(length, device=device) - prefix - noise  # position within the segments
        second_copy = (offset >= segment) & (offset < 2 * segment)
        source = torch.arange(length, device=device) - torch.where(second_copy, segment, 0)
        tokens = tokens.gather(1, source)
        if self.bos_token is not None:
            tokens[:, 0] = self.bos_token
        return tokens


class InductionModule(TokenPredictionModule):
    """A 2-layer attention-only transformer with learned positional embeddings, next-token cross-entropy."""

    def __init__(
        self,
        n_ctx: int = 48,
        d_vocab: int = 64,
        first_target_pos: int = 0,
        n_layers: int = 2,
        d_model: int = 64,
        n_heads: int = 4,
        d_head: int = 16,
        normalization_type: str | None = None,
        learning_coefficient: bool = False,
        **optimizer_args: Any,
    ):
        """`learning_coefficient`: estimate the LLC at expensive snapshots (needs the devinterp extra).
        `optimizer_args`: TaskModule's recipe (lr, weight_decay, betas, warmup_steps, decay_steps, min_lr_ratio)."""
        super().__init__(n_ctx, d_vocab, **optimizer_args)
        require(0 <= first_target_pos < n_ctx, f"first_target_pos={first_target_pos} must lie in [0, n_ctx={n_ctx})")
        self.model = build_hooked_transformer(
            n_layers=n_layers,
            d_model=d_model,
            n_heads=n_heads,
            d_head=d_head,
            n_ctx=n_ctx,
            d_vocab=d_vocab,
            attn_only=True,
            normalization_type=normalization_type,
            positional_embedding_type="standard",
        )

    @override
    def model_input(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, :-1]

    @override
    def targets(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, self.hparams.first_target_pos + 1 :]
