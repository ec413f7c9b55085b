"""Attention patterns and the head scores read off them: previous-token, BOS, duplicate, induction (seed 003)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from transformer_lens import ActivationCache, HookedTransformer

Patterns = Float[torch.Tensor, "layer head query_pos key_pos"]
HeadScores = Float[torch.Tensor, "layer head"]


def attention_pattern(cache: ActivationCache, layer: int) -> Float[torch.Tensor, "batch head query_pos key_pos"]:
    """The cached pattern of block `layer`, NaN in rows whose scores are NaN or +inf.

    TransformerLens writes 0 where the softmax gives NaN, which would read as "attends nowhere";
    a diverged model should show NaN instead. Without cached scores the pattern is returned as is.
    """
    pattern = cache["pattern", layer]
    name = f"blocks.{layer}.attn.hook_attn_scores"
    if name not in cache.cache_dict:
        return pattern
    scores = cache[name]
    broken = (scores.isnan() | scores.isposinf()).any(-1, keepdim=True)
    return torch.where(broken, torch.nan, pattern)


def mean_attention_patterns(cache: ActivationCache, n_layers: int) -> Patterns:
    """Every head's attention pattern averaged over the batch."""
    return torch.stack([attention_pattern(cache, layer).mean(0) for layer in range(n_layers)])


def _mean_diagonal(patterns: Patterns, offset: int, first_query: int = 0) -> HeadScores:
    """Mean attention from query q to key q - offset, over queries q >= max(first_query, offset)."""
    diagonal = patterns.diagonal(offset=-offset, dim1=-2, dim2=-1)  # [layer head n], query = key + offset
    first_key = max(first_query - offset, 0)
    return diagonal[..., first_key:].mean(-1)


def previous_token_scores(patterns: Patterns) -> HeadScores:
    """Mean attention each position pays to the position just before it."""
    return _mean_diagonal(patterns, offset=1)


def bos_scores(patterns: Patterns) -> HeadScores:
    """Mean attention paid to position 0 from positions >= 1 (position 0 can only attend to itself)."""
    return patterns[..., 1:, 0].mean(-1)


def repeated_sequence(inputs: torch.Tensor, prefix_len: int, n_ctx: int) -> tuple[torch.Tensor, int]:
    """`[prefix, r, r]`: the first `half_len` non-prefix inputs repeated, with 2*half_len + prefix_len <= n_ctx.

    The repeated part is taken from the probe batch itself, so it is drawn from the task's own
    distribution and needs no random generator. Returns the sequence and half_len.
    """
    half_len = (n_ctx - prefix_len) // 2
    segment = inputs[:, prefix_len : prefix_len + half_len]
    return torch.cat([inputs[:, :prefix_len], segment, segment], dim=1), half_len


def unique_in_segment(segment: torch.Tensor) -> torch.Tensor:
    """[batch pos] True where an input occurs only once in its sequence (token ids, or vectors compared whole)."""
    same = segment[:, :, None] == segment[:, None, :]
    same = same.all(-1) if segment.ndim == 3 else same
    return same.sum(-1) == 1


def repeated_sequence_scores(
    model: HookedTransformer, inputs: torch.Tensor, prefix_len: int
) -> tuple[HeadScores, HeadScores, Patterns] | None:
    """Duplicate-token and induction scores on `[prefix, r, r]`, and the mean patterns they come from.

    From each position of the second copy, the duplicate score is the attention to the same
    token's first occurrence; the induction score, to the token just after that occurrence. Queries
    whose token occurs more than once in r by chance are left out: there the head cannot tell which
    occurrence to attend to. None when the context cannot hold two copies of at least two tokens.
    """
    repeated, half_len = repeated_sequence(inputs, prefix_len, model.cfg.n_ctx)
    if half_len < 2:
        return None
    _, cache = model.run_with_cache(
        repeated, names_filter=lambda name: name.endswith(("hook_pattern", "hook_attn_scores"))
    )
    patterns = torch.stack(
        [attention_pattern(cache, layer) for layer in range(model.cfg.n_layers)], dim=1
    )  # batch layer head q k
    offsets = torch.arange(half_len, device=patterns.device)
    queries, first_occurrence = prefix_len + half_len + offsets, prefix_len + offsets
    counted = unique_in_segment(inputs[:, prefix_len : prefix_len + half_len]).float()[:, None, None]  # batch 1 1 i
    n_counted = counted.sum().clamp(min=1)
    duplicate = (patterns[..., queries, first_occurrence] * counted).sum((0, -1)) / n_counted
    induction = (patterns[..., queries, first_occurrence + 1] * counted).sum((0, -1)) / n_counted
    return duplicate, induction, patterns.mean(0)


def attention_entropy(pattern: Float[torch.Tensor, "*batch head query_pos key_pos"]) -> Float[torch.Tensor, " head"]:
    """Mean entropy (nats) of each head's attention distribution over keys, averaged over queries and batch."""
    entropy = -torch.special.xlogy(pattern, pattern).sum(-1).mean(-1)  # [*batch head]; 0 log 0 = 0 for masked keys
    return entropy.reshape(-1, entropy.shape[-1]).mean(0)


def mean_attention_scores(cache: ActivationCache, n_layers: int) -> Patterns:
    """Every head's pre-softmax attention scores averaged over the batch, 0 above the diagonal (masked keys)."""
    return torch.stack([cache["attn_scores", layer].mean(0).tril() for layer in range(n_layers)])
