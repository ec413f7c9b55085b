"""Where heads attend by position, on heads whose patterns are known: uniform, previous-token, two back, fixed."""

from __future__ import annotations

import math

import pytest
import torch

from lit_interp.analysis import run_analysis
from lit_interp.analysis.attention_positions import (
    attention_by_key_position,
    bos_attention_by_query,
    bos_attention_trend,
    even_offset_attention,
    fixed_position_attention,
    rank_correlation,
)
from lit_interp.analysis.patterns import mean_attention_patterns

from .conftest import hooked, tiny_task
from .test_patterns import positional_head


def uniform_patterns() -> torch.Tensor:
    """A head with W_Q = W_K = 0: every score 0, so query q attends 1/(q+1) to each key up to itself."""
    model = hooked()
    with torch.no_grad():
        model.blocks[0].attn.W_Q.zero_()
    _, cache = model.run_with_cache(torch.randint(0, 16, (3, 8)))
    return mean_attention_patterns(cache, 1)


def test_rank_correlation_of_rising_falling_flat_and_short_rows():
    rows = torch.tensor([[0.1, 0.5, 0.6, 2.0], [3.0, 2.0, 1.5, 1.0], [0.3, 0.3, 0.3 + 1e-6, 0.3]])
    assert rank_correlation(rows, 1e-3)[:2].tolist() == pytest.approx([1.0, -1.0])
    assert math.isnan(rank_correlation(rows, 1e-3)[2])  # rounding noise, not a trend
    assert math.isnan(rank_correlation(torch.tensor([1.0, 2.0]), 0.0))


def test_uniform_attention_to_bos_falls_at_every_later_query():
    patterns = uniform_patterns()
    by_query = bos_attention_by_query(patterns)
    torch.testing.assert_close(by_query[0, 0], 1 / torch.arange(1.0, 9.0))
    assert bos_attention_trend(by_query).item() == pytest.approx(-1.0)


def test_a_head_always_on_bos_has_no_trend():
    patterns = torch.zeros(1, 1, 8, 8)
    patterns[..., 0] = 1.0
    assert math.isnan(bos_attention_trend(bos_attention_by_query(patterns)).item())


def test_share_of_attention_by_key_position():
    shares = attention_by_key_position(uniform_patterns())[0, 0]
    expected = [sum(1 / (q + 1) for q in range(max(key, 1), 8)) / 7 for key in range(8)]
    assert shares.tolist() == pytest.approx(expected, rel=1e-5)
    fixed = torch.zeros(1, 1, 8, 8)
    fixed[0, 0, 0, 0] = 1.0
    fixed[0, 0, 1:, 1] = 1.0  # every query that can see position 1 attends there
    share, position = fixed_position_attention(fixed)
    assert (share.item(), position.item()) == (1.0, 1.0)
    previous = mean_attention_patterns(positional_head(1).run_with_cache(torch.zeros(2, 8, dtype=torch.long))[1], 1)
    share, _ = fixed_position_attention(previous)
    assert share.item() == pytest.approx(1 / 7, abs=1e-4)  # a previous-token head spreads over every position


def test_even_offset_attention_of_uniform_two_back_and_previous_token_heads():
    expected = sum((q // 2) / (q + 1) for q in range(2, 8)) / 6  # keys q-2, q-4, ... of the q+1 it sees
    assert even_offset_attention(uniform_patterns()).item() == pytest.approx(expected, rel=1e-5)
    tokens = torch.zeros(2, 8, dtype=torch.long)
    for offset, score in ((2, 1.0), (1, 0.0)):
        _, cache = positional_head(offset).run_with_cache(tokens)
        assert even_offset_attention(mean_attention_patterns(cache, 1)).item() == pytest.approx(score, abs=1e-4)


@pytest.mark.parametrize("task", ["bos_ints_attn_only", "affine_recurrence"])
def test_snapshot_scores_bos_tasks_by_query_and_others_by_key(task):
    module, data = tiny_task(task)
    summary, tensors = run_analysis(module, data, step=0, probe_batch_size=8, hook_mean_ablation=False, expensive=False)
    heads = summary["heads"]["L0H0"]
    if task == "bos_ints_attn_only":
        assert tensors["bos_attention_by_query_pos"].shape == (2, 1, 10)
        assert "bos_attention_trend" in heads and "fixed_position_attention" not in heads
        assert tensors["bos_attention_by_query_pos"][:, :, 1:].mean(-1).flatten().tolist() == pytest.approx(
            [summary["heads"][label]["bos_score"] for label in ("L0H0", "L1H0")], rel=1e-5
        )
    else:
        assert tensors["attention_by_key_position"].shape == (2, 2, 13)
        assert {"fixed_position_attention", "fixed_position", "even_offset_attention_negative_c"} <= set(heads)
        assert "bos_attention_trend" not in heads
