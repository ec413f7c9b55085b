"""What a head's attention scores prefer (seed 001): not its own token (QK diagonal), recent keys (K+Q term)."""

from __future__ import annotations

import torch
from jaxtyping import Float

from lit_interp.analysis.attention_positions import rank_correlation

# A score row whose range is below this share of the term's largest |score| is flat: no recency to rank.
FLAT_SCORES = 1e-3


def qk_diagonal_contrast(
    full_qk: Float[torch.Tensor, "layer head d_vocab d_vocab"],
    attn_scale: Float[torch.Tensor, " layer"],
    excluded_tokens: list[int] | tuple[int, ...] = (),
) -> Float[torch.Tensor, "layer head"]:
    """Mean diagonal minus mean off-diagonal entry of each full QK circuit, in attention-score units.

    Entry (q, k) of `W_E W_QK W_Eᵀ` is the score a query token q gives a key token k through the
    embeddings alone; dividing by the layer's `attn_scale` makes it what the softmax sees. Negative:
    the head gives a key holding its own token less than other keys ("don't attend to your own
    token", seed 001's layer 1). Equal to the mean over rows of (own-token score minus the row's
    other scores' mean), so a constant per query, which the softmax ignores, does not move it.
    `excluded_tokens` (BOS) are dropped as queries and keys. NaN for a non-finite circuit.
    """
    kept = torch.ones(full_qk.shape[-1], dtype=torch.bool, device=full_qk.device)
    kept[list(excluded_tokens)] = False
    circuit = full_qk[..., kept, :][..., kept]
    n = circuit.shape[-1]
    diagonal = circuit.diagonal(dim1=-2, dim2=-1).mean(-1)
    off_diagonal = (circuit.sum((-2, -1)) - circuit.diagonal(dim1=-2, dim2=-1).sum(-1)) / (n * (n - 1))
    return (diagonal - off_diagonal) / attn_scale.to(circuit)[:, None]


def recency_preference(
    scores: Float[torch.Tensor, "head query_pos key_pos"], first_key: int = 0
) -> Float[torch.Tensor, " head"]:
    """Mean over queries of the rank correlation between key position and score, keys first_key..query.

    +1: every query scores more recent keys higher (seed 001's K+Q-composition term, keys after
    BOS). Queries that see fewer than 3 such keys are left out, as are flat rows (range below
    FLAT_SCORES of the largest |score|); NaN when no query is left.
    """
    n = scores.shape[-1]
    min_range = FLAT_SCORES * scores.abs().amax((-2, -1)).clamp(min=1e-30)
    correlations = []
    for query in range(first_key + 2, n):
        correlations.append(rank_correlation(scores[:, query, first_key : query + 1], min_range))
    if not correlations:
        return torch.full(scores.shape[:1], torch.nan, device=scores.device)
    return torch.stack(correlations, -1).nanmean(-1)
