"""MLP neuron statistics (seed 004): how often each neuron fires on the probe batch, and the dead fraction per layer."""

from __future__ import annotations

import torch
from jaxtyping import Float
from transformer_lens import ActivationCache


def neuron_firing_frequency(cache: ActivationCache, n_layers: int) -> Float[torch.Tensor, "layer d_mlp"]:
    """Fraction of (sequence, position) pairs where each neuron's activation (`mlp.hook_post`) is positive."""
    return torch.stack([(cache["post", layer] > 0).float().mean((0, 1)) for layer in range(n_layers)])


def neuron_activation_by_position(
    cache: ActivationCache, n_layers: int
) -> dict[str, Float[torch.Tensor, "layer pos d_mlp"]]:
    """Each neuron's batch-mean activation and firing frequency at each position (seed 004's heatmaps)."""
    posts = [cache["post", layer] for layer in range(n_layers)]
    return {
        "mean_activation": torch.stack([post.mean(0) for post in posts]),
        "firing_frequency": torch.stack([(post > 0).float().mean(0) for post in posts]),
    }


def dead_neuron_fraction(frequency: Float[torch.Tensor, "layer d_mlp"]) -> Float[torch.Tensor, " layer"]:
    """Fraction of each layer's neurons that never fire on the probe batch."""
    return (frequency == 0).float().mean(-1)
