"""Attention patterns and head scores on hand-built heads whose answer is known."""

from __future__ import annotations

import pytest
import torch

from lit_interp.analysis.patterns import (
    attention_entropy,
    bos_scores,
    mean_attention_patterns,
    previous_token_scores,
    repeated_sequence,
    repeated_sequence_scores,
    unique_in_segment,
)

from .conftest import hooked


def positional_head(offset: int):
    """1 head attending from each position q to q - offset (uniformly while q < offset): one-hot positions only."""
    model = hooked()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.pos_embed.W_pos[:, :8] = torch.eye(8)
        attn = model.blocks[0].attn  # model.W_Q and friends are stacked copies: write the block's own weights
        attn.W_Q[0] = 10 * torch.eye(16)
        attn.W_K[0] = 10 * torch.eye(16).roll(offset, dims=1)  # the key at position j matches the query at j + offset
    return model


def token_matching_head():
    """1 head that attends to every earlier copy of the current token, equally."""
    model = hooked()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.embed.W_E[:] = torch.eye(16)
        model.blocks[0].attn.W_Q[0] = 10 * torch.eye(16)
        model.blocks[0].attn.W_K[0] = 10 * torch.eye(16)
    return model


def patterns_of(model, tokens):
    _, cache = model.run_with_cache(tokens)
    return mean_attention_patterns(cache, model.cfg.n_layers)


def test_previous_token_head_scores_one():
    tokens = torch.randint(0, 16, (4, 8))
    patterns = patterns_of(positional_head(offset=1), tokens)
    assert patterns.shape == (1, 1, 8, 8)
    assert previous_token_scores(patterns).item() == pytest.approx(1.0, abs=1e-4)
    assert bos_scores(patterns).item() == pytest.approx(
        1 / 7, abs=1e-4
    )  # only position 1's previous token is position 0


def test_head_attending_to_itself_scores_zero_previous_token():
    tokens = torch.randint(0, 16, (4, 8))
    patterns = patterns_of(positional_head(offset=0), tokens)
    assert previous_token_scores(patterns).item() == pytest.approx(0.0, abs=1e-4)
    assert bos_scores(patterns).item() == pytest.approx(0.0, abs=1e-4)


def test_repeated_sequence_keeps_prefix_and_fits_context():
    inputs = torch.tensor([[99, 1, 2, 3, 4, 5, 6, 7, 8, 9]])
    repeated, half_len = repeated_sequence(inputs, prefix_len=1, n_ctx=10)
    assert half_len == 4
    assert repeated.tolist() == [[99, 1, 2, 3, 4, 1, 2, 3, 4]]


def test_induction_head_scores_one_and_duplicate_zero():
    inputs = torch.arange(8).repeat(3, 1)
    duplicate, induction, patterns = repeated_sequence_scores(
        positional_head(offset=3), inputs, prefix_len=0
    )  # half_len 4
    assert patterns.shape == (1, 1, 8, 8)
    assert induction.item() == pytest.approx(1.0, abs=1e-4)
    assert duplicate.item() == pytest.approx(0.0, abs=1e-4)


def test_token_matching_head_splits_between_first_copy_and_itself():
    inputs = torch.arange(8).repeat(3, 1)  # distinct tokens, so the only earlier match is the first copy
    duplicate, induction, _ = repeated_sequence_scores(token_matching_head(), inputs, prefix_len=0)
    assert duplicate.item() == pytest.approx(0.5, abs=1e-4)
    assert induction.item() == pytest.approx(0.0, abs=1e-4)


def test_no_repeated_scores_when_context_too_short():
    model = hooked(n_ctx=4)
    assert repeated_sequence_scores(model, torch.zeros(2, 4, dtype=torch.long), prefix_len=1) is None


def test_chance_repeats_are_left_out_of_duplicate_scores():
    # Token 3 occurs twice in the repeated segment: a token-matching head splits its attention there.
    inputs = torch.tensor([[1, 3, 3, 4, 9, 9, 9, 9]])
    assert unique_in_segment(inputs[:, :4]).tolist() == [[True, False, False, True]]
    duplicate, _, _ = repeated_sequence_scores(token_matching_head(), inputs, prefix_len=0)
    assert duplicate.item() == pytest.approx(0.5, abs=1e-4)  # as with distinct tokens; 1/3 would enter with the repeats


def test_attention_entropy_of_uniform_and_one_hot_attention():
    uniform = torch.ones(8, 8).tril() / torch.arange(1, 9)[:, None]
    entropy = attention_entropy(torch.stack([uniform, torch.eye(8)])[None])  # batch head q k
    torch.testing.assert_close(entropy, torch.tensor([torch.log(torch.arange(1.0, 9)).mean().item(), 0.0]))
