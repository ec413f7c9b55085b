"""Adversarial inputs for token tasks: repeated adjacent tokens and a missing BOS."""

from __future__ import annotations

import torch

from lit_interp.analysis.adversarial import adversarial_losses, repeated_adjacent_tokens, replace_bos
from lit_interp.tasks.base import Stream

from .conftest import tiny_task


def test_repeated_adjacent_tokens_keep_bos_and_pair_each_token():
    tokens = torch.tensor([[100, 1, 2, 3, 4, 5], [100, 6, 7, 8, 9, 10]])
    assert repeated_adjacent_tokens(tokens, has_bos=True).tolist() == [[100, 1, 1, 2, 2, 3], [100, 6, 6, 7, 7, 8]]
    assert repeated_adjacent_tokens(tokens[:, 1:], has_bos=False).tolist() == [[1, 1, 2, 2, 3], [6, 6, 7, 7, 8]]


def test_replace_bos_puts_an_ordinary_token_first_and_keeps_the_rest():
    module, data = tiny_task("bos_ints_attn_only")
    tokens = data.make_batch(Stream.PROBE, 0, 16)
    replaced = replace_bos(tokens)
    assert (replaced[:, 0] != data.bos_token).all()
    assert torch.equal(replaced[:, 1:], tokens[:, 1:]) and (tokens[:, 0] == data.bos_token).all()


def test_adversarial_losses_report_no_bos_only_for_bos_tasks():
    module, data = tiny_task("bos_ints_attn_only")
    losses = adversarial_losses(module.model, module, data.make_batch(Stream.PROBE, 0, 8), has_bos=True)
    assert set(losses) == {"clean_loss", "repeated_tokens_loss", "no_bos_loss"}
    assert len(set(losses.values())) == 3
    module, data = tiny_task("prev_token_digits")
    assert set(adversarial_losses(module.model, module, data.make_batch(Stream.PROBE, 0, 8), has_bos=False)) == {
        "clean_loss",
        "repeated_tokens_loss",
    }
