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
