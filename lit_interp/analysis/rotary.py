"""Rotary models (seed 000): how q and k vary across positions before and after the rotation."""

from __future__ import annotations

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float
from transformer_lens import ActivationCache, HookedTransformer

Similarity = Float[torch.Tensor, "layer head pos pos"]


def is_rotary(model: HookedTransformer) -> bool:
    return model.cfg.positional_embedding_type == "rotary"


def _cosine_similarity(
    a: Float[torch.Tensor, "batch pos head d_head"], b: Float[torch.Tensor, "batch pos head d_head"]
) -> Float[torch.Tensor, "head pos pos"]:
    """Cosine similarity of a at each position with b at each position, averaged over the batch."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    return einops.einsum(a, b, "batch p1 head d, batch p2 head d -> head p1 p2") / a.shape[0]


def rotary_similarities(cache: ActivationCache, n_layers: int) -> dict[str, Similarity]:
    """Pairwise cosine similarity across positions of q, rot_q, k, rot_k, and of pre-rotary q against k.

    A 1-layer previous-token head learns a pre-rotary q that is nearly the same at every position
    (all ~1), so the rotation alone carries position; q against k shows the learned QK offset.
    """
    pairs = {
        "q": ("q", "q"),
        "rot_q": ("rot_q", "rot_q"),
        "k": ("k", "k"),
        "rot_k": ("rot_k", "rot_k"),
        "q_vs_k": ("q", "k"),
    }
    return {
        name: torch.stack([_cosine_similarity(cache[a, layer], cache[b, layer]) for layer in range(n_layers)])
        for name, (a, b) in pairs.items()
    }


def mean_off_diagonal(similarity: Similarity) -> Float[torch.Tensor, "layer head"]:
    """Mean similarity between different positions: near 1 when the vector barely depends on position or token."""
    n = similarity.shape[-1]
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=similarity.device)
    return similarity[..., off_diagonal].mean(-1)


def position_similarity(cache: ActivationCache, n_layers: int, name: str) -> Float[torch.Tensor, "layer head"]:
    """`mean_off_diagonal` of one activation's (`q`, `k`, ...) similarity across positions: ~1 when constant."""
    return mean_off_diagonal(
        torch.stack([_cosine_similarity(cache[name, layer], cache[name, layer]) for layer in range(n_layers)])
    )


def rotary_qk_offset_scores(
    model: HookedTransformer, cache: ActivationCache
) -> Float[torch.Tensor, "layer head offset"]:
    """The score the batch-mean pre-rotary query gives the batch-mean pre-rotary key `offset` positions back.

    Both vectors are rotated by the model's own rotary embedding (`apply_rotary`) and dotted over
    `attn_scale`, for offsets 0..pos-1. Rotary scores depend only on the offset, so this is the
    learned preference seed 000 reads off its q-against-k similarity; it speaks for the head when q
    and k barely depend on the token (`rotary_q_similarity`, `rotary_k_similarity` near 1).
    """
    scores = []
    for layer in range(model.cfg.n_layers):
        attn = model.blocks[layer].attn
        q, k = cache["q", layer], cache["k", layer]  # batch pos head d_head
        n_pos = q.shape[1]
        rot_q = attn.apply_rotary(q.mean((0, 1)).expand(1, n_pos, -1, -1))[0, -1]  # the last query: head d_head
        rot_k = attn.apply_rotary(k.mean((0, 1)).expand(1, n_pos, -1, -1))[0].flip(0)  # offset head d_head
        scores.append(einops.einsum(rot_q, rot_k, "head d, offset head d -> head offset") / attn.attn_scale)
    return torch.stack(scores)


def rotary_qk_offset(offset_scores: Float[torch.Tensor, "layer head offset"]) -> Float[torch.Tensor, "layer head"]:
    """The offset (0: the query's own position) scoring highest (1 for a previous-token head); NaN if not finite."""
    finite = torch.isfinite(offset_scores).all(-1)
    return torch.where(finite, offset_scores.nan_to_num().argmax(-1).float(), torch.nan)
