"""Induction heads (Olsson et al. 2022): prefix matching, in-context loss, the previous-token -> induction circuit."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from transformer_lens import HookedTransformer

from lit_interp.analysis.losses import Task
from lit_interp.analysis.patterns import HeadScores, repeated_sequence

Tokens = Int[torch.Tensor, "batch pos"]
BatchPatterns = Float[torch.Tensor, "batch layer head query_pos key_pos"]

# Fewer queries than this with a single earlier occurrence of their token: the prefix-matching score
# would be the attention of a handful of positions, so it is NaN (and a snapshot leaves it out).
MIN_PREFIX_MATCHING_QUERIES = 16


def previous_occurrences(tokens: Tokens) -> Tokens:
    """[batch pos] the position of the only earlier occurrence of each position's token; -1 where the token
    has not occurred before, or has occurred more than once (the head cannot tell which one to follow)."""
    n = tokens.shape[1]
    earlier = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril(-1)  # [query key], key < query
    same = (tokens[:, :, None] == tokens[:, None, :]) & earlier
    first = same.int().argmax(-1)  # the first earlier copy (0 where there is none)
    return torch.where(same.sum(-1) == 1, first, -1)


def prefix_matching_queries(tokens: Tokens) -> Bool[torch.Tensor, "batch pos"]:
    """The queries prefix matching can score: their token occurred exactly once before, at p with p + 1 < q
    (p + 1 = q would be the query itself)."""
    previous = previous_occurrences(tokens)
    return (previous >= 0) & (previous + 1 < torch.arange(tokens.shape[1], device=tokens.device))


def prefix_matching_scores(patterns: BatchPatterns, tokens: Tokens) -> tuple[HeadScores, int]:
    """Mean attention from each query to the token after the earlier occurrence of the query's own token.

    Olsson et al.'s prefix matching, on any token sequences, over the `prefix_matching_queries`.
    Returns the scores and the number of queries counted; the scores are NaN when fewer than
    MIN_PREFIX_MATCHING_QUERIES count.
    """
    previous = previous_occurrences(tokens)
    counted = prefix_matching_queries(tokens)  # [batch query]
    n_counted = int(counted.sum())
    if n_counted < MIN_PREFIX_MATCHING_QUERIES:
        nan = torch.full(patterns.shape[1:3], torch.nan, device=patterns.device)
        return nan, n_counted
    target = (previous + 1).clamp(min=0)  # [batch query], a valid key index even where not counted
    index = target[:, None, None, :, None].expand(*patterns.shape[:-1], 1)
    attention = patterns.gather(-1, index)[..., 0]  # [batch layer head query]
    weights = counted[:, None, None, :].float()
    return (attention * weights).sum((0, -1)) / n_counted, n_counted


def predicts_next_token(task: Task, batch: torch.Tensor) -> bool:
    """A token task whose model reads all but the last token and whose targets are the next tokens."""
    if batch.is_floating_point() or batch.ndim != 2:
        return False
    first = task.hparams.first_target_pos
    model_input, targets = task.model_input(batch), task.targets(batch)
    return torch.equal(model_input, batch[:, :-1]) and torch.equal(targets, batch[:, first + 1 :])


def next_token_losses(
    logits: Float[torch.Tensor, "batch pos d_vocab"], tokens: Tokens
) -> Float[torch.Tensor, "batch pos_minus_1"]:
    """Cross-entropy of predicting tokens[:, p + 1] from logits[:, p], per position."""
    predicted = logits[:, :-1].float()
    return F.cross_entropy(predicted.flatten(0, 1), tokens[:, 1:].flatten(), reduction="none").view(tokens.shape[0], -1)


def in_context_losses(model: HookedTransformer, inputs: Tokens, prefix_len: int) -> dict[str, float] | None:
    """Next-token loss on the first copy and on the repeated copy of `[prefix, r, r]`, and their difference.

    Both halves score the same L - 1 targets r_2 … r_L: unpredictable in the first copy, predictable
    from the first copy in the second. `in_context_loss` = repeated-half loss - first-half loss: about 0
    before induction heads form, about -log(d_vocab) once they copy perfectly. None when the context
    cannot hold two copies of at least two tokens.
    """
    repeated, half_len = repeated_sequence(inputs, prefix_len, model.cfg.n_ctx)
    if half_len < 2:
        return None
    losses = next_token_losses(model(repeated), repeated)  # position p predicts p + 1
    first = losses[:, prefix_len : prefix_len + half_len - 1].mean().item()
    second = losses[:, prefix_len + half_len : prefix_len + 2 * half_len - 1].mean().item()
    return {"first_half_loss": first, "repeated_half_loss": second, "in_context_loss": second - first}


def random_composition_score(d_model: int) -> float:
    """The root-mean-square composition score of two fixed matrices whose relative orientation is random.

    For a Haar-random rotation R of the residual stream, E |A R B|² = |A|² |B|² / d_model exactly,
    so a score well above 1/√d_model means the writer's output and the reader's input are aligned.
    """
    return 1 / math.sqrt(d_model)


def induction_circuit(
    prev_token_scores: HeadScores,
    induction_scores: HeadScores,
    k_composition: Float[torch.Tensor, "writer reader"],
    d_model: int,
) -> dict[str, float]:
    """The strongest induction head (layers >= 1), the strongest previous-token head of an earlier layer,
    and the K-composition score from the second into the first (`k_composition` in `all_head_labels()` order).

    Two levels to read `k_composition` against: `random_k_composition`, the score of two randomly
    oriented matrices (`random_composition_score`), and `other_k_composition`, the mean score into the
    induction head from the other heads of earlier layers (absent when there are none). NaN everywhere
    but the random level when the induction scores are all NaN.
    """
    n_layers, n_heads = induction_scores.shape
    later = torch.nan_to_num(induction_scores[1:], nan=-math.inf)
    if n_layers < 2 or not torch.isfinite(later).any():
        keys = ("induction_layer", "induction_head", "induction_score", "previous_token_layer")
        keys += ("previous_token_head", "prev_token_score", "k_composition")
        keys += ("other_k_composition",) if n_heads > 1 else ()
        return dict.fromkeys(keys, math.nan) | {"random_k_composition": random_composition_score(d_model)}
    flat = int(later.flatten().argmax())
    induction_layer, induction_head = 1 + flat // n_heads, flat % n_heads
    earlier = torch.nan_to_num(prev_token_scores[:induction_layer], nan=-math.inf).flatten()
    flat = int(earlier.argmax())
    previous_layer, previous_head = flat // n_heads, flat % n_heads
    writer, reader = previous_layer * n_heads + previous_head, induction_layer * n_heads + induction_head
    others = [head for head in range(induction_layer * n_heads) if head != writer]
    other = {"other_k_composition": k_composition[others, reader].mean().item()} if others else {}
    return {
        "induction_layer": induction_layer,
        "induction_head": induction_head,
        "induction_score": induction_scores[induction_layer, induction_head].item(),
        "previous_token_layer": previous_layer,
        "previous_token_head": previous_head,
        "prev_token_score": prev_token_scores[previous_layer, previous_head].item(),
        "k_composition": k_composition[writer, reader].item(),
        **other,
        "random_k_composition": random_composition_score(d_model),
    }
