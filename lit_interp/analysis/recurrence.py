"""Affine recurrences (seed 002): parameters read back from the data, loss by coefficient size, linear probes."""

from __future__ import annotations

import torch
from jaxtyping import Float
from transformer_lens import ActivationCache

Vectors = Float[torch.Tensor, "batch seq_len vector_dim"]


def recurrence_parameters(
    vectors: Vectors, order: int
) -> tuple[Float[torch.Tensor, "batch order"], Float[torch.Tensor, "batch vector_dim"]]:
    """c_1..c_order and d of each sequence a_j = Σ_k c_k a_{j-k} + d, by least squares on the sequence itself.

    Differences a_j - a_{j-1} obey the recurrence without d, which gives c; d is then the mean residual.
    Sequences are stored rescaled (seed 002's normalisation), which leaves c unchanged and scales d alike.
    """
    differences = vectors.diff(dim=1)  # batch seq_len-1 vector_dim
    n = differences.shape[1]
    lagged = torch.stack([differences[:, order - k : n - k] for k in range(1, order + 1)], dim=-1)  # batch j dim order
    design, target = lagged.flatten(1, 2), differences[:, order:].flatten(1)[..., None]
    coefficients = torch.linalg.lstsq(design.double(), target.double()).solution[..., 0].float()
    previous = torch.stack([vectors[:, order - k : vectors.shape[1] - k] for k in range(1, order + 1)], dim=-1)
    constant = (vectors[:, order:] - (previous * coefficients[:, None, None]).sum(-1)).mean(1)
    return coefficients, constant


def coefficient_bin_edges(coefficient_bounds: tuple[float, float], n_bins: int = 4) -> list[float]:
    """Equal-width bins of the largest |c_k| from 0 to the largest bound."""
    top = max(abs(bound) for bound in coefficient_bounds)
    return torch.linspace(0, top, n_bins + 1).tolist()


def loss_by_coefficient_size(
    output: torch.Tensor, targets: torch.Tensor, first_target_pos: int, coefficients: torch.Tensor, edges: list[float]
) -> dict[str, float]:
    """Mean MSE of the sequences whose largest |c_k| falls in each bin, `loss_abs_c_<low>_to_<high>` (NaN if empty)."""
    per_sequence = (output[:, first_target_pos:].float() - targets).pow(2).mean((1, 2))
    size = coefficients.abs().amax(-1)
    losses = {}
    for index, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        inside = (size >= low) & ((size < high) if index < len(edges) - 2 else (size <= high))
        losses[f"loss_abs_c_{low:g}_to_{high:g}"] = per_sequence[inside].mean().item() if inside.any() else float("nan")
    return losses


def held_out_r2(
    features: Float[torch.Tensor, "batch d_model"],
    targets: Float[torch.Tensor, "batch n"],
    train_fraction: float = 0.75,
    ridge: float = 1.0,
) -> float:
    """Held-out R² (variance-weighted, last quarter of the batch) of a ridge fit on the rest; NaN if not finite.

    Features are standardised on the training part, so `ridge` weighs every direction alike.
    """
    if not (torch.isfinite(features).all() and torch.isfinite(targets).all()):
        return float("nan")  # a diverged model: keep NaN off the solver
    features, targets = features.double(), targets.double()
    n_train = int(len(features) * train_fraction)
    mean, std = features[:n_train].mean(0), features[:n_train].std(0).clamp(min=1e-8)
    standardised = torch.cat(
        [(features - mean) / std, torch.ones(len(features), 1, dtype=features.dtype, device=features.device)], dim=1
    )
    train, test = standardised[:n_train], standardised[n_train:]
    penalty = ridge * torch.eye(train.shape[1], dtype=features.dtype, device=features.device)
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    weights = torch.linalg.solve(train.T @ train + penalty, train.T @ targets[:n_train])
    residual = (test @ weights - targets[n_train:]).pow(2).sum()
    total = (targets[n_train:] - targets[n_train:].mean(0)).pow(2).sum()
    return (1 - residual / total).item()


def parameter_probes(
    cache: ActivationCache, coefficients: torch.Tensor, constant: torch.Tensor
) -> dict[str, list[float]]:
    """Held-out R² of linear probes for c and d from the residual stream at the last position entering each block.

    Entry l reads `resid_pre` of block l; the last entry, the final residual stream.
    """
    probes: dict[str, list[float]] = {"c": [], "d": []}
    for residual in cache.accumulated_resid(layer=None, incl_mid=False):
        features = residual[:, -1]
        probes["c"].append(held_out_r2(features, coefficients))
        probes["d"].append(held_out_r2(features, constant))
    return probes
