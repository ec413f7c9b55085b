"""A task outside lit_interp: previous-token prediction on letter strings, with an analysis of its own."""

from __future__ import annotations

from typing import Any

import torch

from lit_interp.analysis.registry import Analysis, AnalysisContext
from lit_interp.tasks.base import PreviousTokenModule, SyntheticDataModule, build_hooked_transformer

VOWELS = [0, 4, 8, 14, 20]  # a e i o u


class LettersDataModule(SyntheticDataModule):
    """Strings of `n_ctx` random letters, token id = position in the alphabet."""

    d_vocab = 26
    first_target_pos = 1

    def __init__(
        self, n_ctx: int = 8, batch_size: int = 32, seed: int = 0, val_batches: int = 2, val_batch_size: int = 64
    ):
        super().__init__(batch_size, seed, val_batches, val_batch_size)
        self.save_hyperparameters()
        self.n_ctx = n_ctx

    def generate(self, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        return torch.randint(0, self.d_vocab, (batch_size, self.n_ctx), generator=generator, device=generator.device)


def attention_to_vowels(context: AnalysisContext) -> tuple[dict, dict]:
    """Per head: the share of attention paid to keys holding a vowel."""
    is_vowel = torch.isin(context.batch, torch.tensor(VOWELS, device=context.batch.device)).float()  # batch key_pos
    heads = {}
    for layer in range(context.model.cfg.n_layers):
        pattern = context.cache["pattern", layer]  # batch head query_pos key_pos
        share = (pattern * is_vowel[:, None, None, :]).sum(-1).mean((0, 2))
        heads |= {f"L{layer}H{head}": {"vowel_attention": value} for head, value in enumerate(share.tolist())}
    return {"heads": heads}, {}


class LettersModule(PreviousTokenModule):
    """One attention-only layer; `analyses()` adds the vowel score to every snapshot and report."""

    def __init__(
        self,
        n_ctx: int = 8,
        d_vocab: int = 26,
        first_target_pos: int = 1,
        d_model: int = 16,
        **optimizer_args: Any,
    ):
        super().__init__(n_ctx, d_vocab, first_target_pos, **optimizer_args)
        self.model = build_hooked_transformer(
            n_layers=1,
            d_model=d_model,
            n_heads=1,
            d_head=d_model,
            n_ctx=n_ctx,
            d_vocab=d_vocab,
            attn_only=True,
            normalization_type=None,
        )

    def analyses(self) -> list[Analysis]:
        return [Analysis("vowel_attention", attention_to_vowels, applies=lambda context: context.token_task)]
