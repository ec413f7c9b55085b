"""Where heads attend by position (seeds 001, 002): BOS by query position, one fixed key position, even offsets."""

from __future__ import annotations

import torch
from jaxtyping import Float

from lit_interp.analysis.patterns import HeadScores, Patterns

# A profile whose whole range is below this (in attention probability) is flat: it has no trend.
FLAT_ATTENTION = 1e-3


def rank_correlation(
    values: Float[torch.Tensor, "*rows n"], min_range: float | Float[torch.Tensor, "*rows"]
) -> Float[torch.Tensor, "*rows"]:
    """Spearman correlation of each row with its index: +1 rises at every step, -1 falls at every step.

    NaN for a row with fewer than 3 values, a non-finite value, or a range (max - min) below `min_range`:
    there the ranks would only order rounding noise.
    """
    n = values.shape[-1]
    if n < 3:
        return torch.full(values.shape[:-1], torch.nan, device=values.device)
    ranks = values.argsort(-1).argsort(-1).float()
    index = torch.arange(n, dtype=torch.float32, device=values.device)
    ranks, index = ranks - ranks.mean(-1, keepdim=True), index - index.mean()
    correlation = (ranks * index).sum(-1) / (ranks.norm(dim=-1) * index.norm())
    spread = values.amax(-1) - values.amin(-1)
    trusted = torch.isfinite(values).all(-1) & (spread >= min_range)
    return torch.where(trusted, correlation, torch.nan)


def bos_attention_by_query(patterns: Patterns) -> Float[torch.Tensor, "layer head query_pos"]:
    """Attention each query position pays to position 0 (BOS), batch mean (seed 001's falling layer-0 profile)."""
    return patterns[..., :, 0]


def bos_attention_trend(by_query: Float[torch.Tensor, "layer head query_pos"]) -> HeadScores:
    """Rank correlation of attention to BOS with query position over queries >= 1 (-1: falls at every later query).

    NaN when the profile is flat (range below FLAT_ATTENTION), e.g. a head that always attends to BOS.
    """
    return rank_correlation(by_query[..., 1:], FLAT_ATTENTION)


def attention_by_key_position(patterns: Patterns) -> Float[torch.Tensor, "layer head key_pos"]:
    """Share of the attention of queries 1.. (all of them, one common set) paid to each key position.

    Query 0 can only attend to itself, so it is left out. A head attending to position p from every
    query that can see it scores (n_ctx - p) / (n_ctx - 1) there: 1 for p = 0 or 1.
    """
    return patterns[..., 1:, :].mean(-2)


def fixed_position_attention(patterns: Patterns) -> tuple[HeadScores, HeadScores]:
    """The largest share of `attention_by_key_position` and the key position holding it (seed 002's layer 1).

    A previous-token or self-attending head spreads 1/(n_ctx - 1) over the positions; a uniform head
    gives position 0 (H(n_ctx) - 1)/(n_ctx - 1) (harmonic number H); one that always attends to position 0 or 1, 1.
    """
    share, position = attention_by_key_position(patterns).max(-1)
    finite = torch.isfinite(patterns).flatten(-2).all(-1)
    return torch.where(finite, share, torch.nan), torch.where(finite, position.float(), torch.nan)


def even_offset_attention(patterns: Patterns) -> HeadScores:
    """Mean over queries q >= 2 of the attention paid to keys q-2, q-4, ... (seed 002's checkerboard).

    The query's own position (offset 0) is left out, so a self-attending head scores 0 and a head
    attending to the vector two back scores 1. Oscillating recurrences (c < 0) make every other
    vector alike, which a head matching similar vectors turns into this pattern.
    """
    n = patterns.shape[-1]
    query, key = torch.arange(n)[:, None], torch.arange(n)[None, :]
    even = ((query - key) % 2 == 0) & (key < query)
    return (patterns * even.to(patterns)).sum(-1)[..., 2:].mean(-1)
