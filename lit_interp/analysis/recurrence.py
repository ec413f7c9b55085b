"""Affine recurrences (seed 002): parameters read back from the data, loss by coefficient size, linear probes."""

from __future__ import annotations

import einops
import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

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


def with_other_parameters(vectors: Vectors, order: int) -> Vectors:
    """Each sequence rebuilt from its own first `order` vectors with the next sequence's c and d, rescaled to its own
    largest norm: a recurrence of the same kind whose every later vector, and so every answer, differs.

    The recurrence's corruption for activation patching: swapping one input vector alone barely moves
    a model that reads c and d off the whole sequence.
    """
    coefficients, constant = (values.roll(1, dims=0) for values in recurrence_parameters(vectors, order))
    terms = list(vectors[:, :order].unbind(1))
    for _ in range(order, vectors.shape[1]):
        previous = torch.stack(terms[-order:], dim=1)  # batch order vector_dim, oldest first
        terms.append(constant + einops.einsum(coefficients.flip(-1), previous, "batch k, batch k d -> batch d"))
    rebuilt = torch.stack(terms, dim=1)
    scale = vectors.norm(dim=-1).amax(1) / rebuilt.norm(dim=-1).amax(1)
    return rebuilt * scale[:, None, None]


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


# The probes' own set (`Stream.LINEAR_PROBE`): large enough that every fold trains on ~10x more rows than a
# d_model=128 probe has parameters; a forward pass of it is the probes' whole cost.
PROBE_SEQUENCES = 2048
PROBE_FOLDS = 5
PROBE_RIDGE = 1.0
PROBE_CHUNK = 128  # sequences per forward pass of the probes' set
SHUFFLE_SEED = 0


def too_few_rows(n_rows: int, n_features: int, folds: int = PROBE_FOLDS) -> str | None:
    """Why a k-fold ridge probe on this many rows cannot be trusted, or None: each fold must train on more rows
    than the probe has parameters (features and intercept)."""
    training_rows = n_rows - -(-n_rows // folds)  # the fewest rows any fold trains on
    if folds >= 2 and training_rows > n_features + 1:
        return None
    return (
        f"{n_rows} sequences in {folds} folds leave {training_rows} training rows for {n_features + 1} probe "
        f"parameters (d_model + intercept): a probe that can memorise its rows reads nothing; give it more sequences"
    )


def cross_validated_predictions(
    features: Float[torch.Tensor, "batch d_model"],
    targets: Float[torch.Tensor, "batch n"],
    folds: int = PROBE_FOLDS,
    ridge: float = PROBE_RIDGE,
) -> Float[torch.Tensor, "batch n"]:
    """Each row's prediction by a ridge fit on the other folds (`folds` contiguous ones), every target column at once.

    Features are standardised on each fold's training rows, so `ridge` weighs every direction alike.
    """
    features, targets = features.double(), targets.double()
    predictions = torch.empty_like(targets)
    for held_out in torch.arange(len(features), device=features.device).chunk(folds):
        train = torch.ones(len(features), dtype=torch.bool, device=features.device)
        train[held_out] = False
        mean, std = features[train].mean(0), features[train].std(0).clamp(min=1e-8)
        design = torch.cat([(features - mean) / std, torch.ones_like(features[:, :1])], dim=1)
        penalty = ridge * torch.eye(design.shape[1], dtype=design.dtype, device=design.device)
        penalty[-1, -1] = 0.0  # the intercept is not shrunk
        weights = torch.linalg.solve(design[train].T @ design[train] + penalty, design[train].T @ targets[train])
        predictions[held_out] = design[held_out] @ weights
    return predictions


def r2(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """Variance-weighted R² over every target column; NaN if the targets do not vary."""
    total = (targets - targets.mean(0)).pow(2).sum()
    return (1 - (predictions - targets).pow(2).sum() / total).item() if total > 0 else float("nan")


def cross_validated_r2(
    features: Float[torch.Tensor, "batch d_model"],
    targets: Float[torch.Tensor, "batch n"],
    folds: int = PROBE_FOLDS,
    ridge: float = PROBE_RIDGE,
) -> float:
    """Out-of-fold R² (variance-weighted) of a ridge probe (`cross_validated_predictions`). NaN if anything is not
    finite, if the targets do not vary, or with too few rows (`too_few_rows`)."""
    ok = torch.isfinite(features).all() and torch.isfinite(targets).all()
    if not ok or too_few_rows(len(features), features.shape[1], folds) is not None:
        return float("nan")  # a diverged model, or a fit that would memorise: keep NaN off the solver
    return r2(cross_validated_predictions(features, targets, folds, ridge), targets.double())


def last_position_residuals(
    model: HookedTransformer, inputs: torch.Tensor, chunk: int = PROBE_CHUNK
) -> Float[torch.Tensor, "entry batch d_model"]:
    """The residual stream at the last position entering each block, then the final one (`accumulated_resid`).

    Run `chunk` sequences at a time: one pass over thousands of sequences spills the CPU caches and is
    slower than the same sequences in chunks.
    """
    last = model.cfg.n_layers - 1
    parts = []
    for part in inputs.split(chunk):
        _, cache = model.run_with_cache(
            part, names_filter=lambda name: name.endswith("hook_resid_pre") or name == f"blocks.{last}.hook_resid_post"
        )
        parts.append(cache.accumulated_resid(layer=None, incl_mid=False)[:, :, -1])
    return torch.cat(parts, dim=1)


def parameter_probes(
    residuals: Float[torch.Tensor, "entry batch d_model"],
    coefficients: torch.Tensor,
    constant: torch.Tensor,
    folds: int = PROBE_FOLDS,
) -> tuple[dict[str, list[float]], dict[str, int | float | str]]:
    """Out-of-fold R² of ridge probes for c and d from each entry of `residuals` (`last_position_residuals`),
    each beside the same probe's R² on targets shuffled across sequences (what a probe finds in nothing).

    Also returns the probes' section: sequences, folds, features, and the reason when every R² is NaN
    for too few rows.
    """
    n_rows, n_features = residuals.shape[1:]
    generator = torch.Generator().manual_seed(SHUFFLE_SEED)
    shuffle = torch.randperm(n_rows, generator=generator).to(residuals.device)
    targets = {"c": coefficients, "c_shuffled": coefficients[shuffle], "d": constant, "d_shuffled": constant[shuffle]}
    stacked = torch.cat(list(targets.values()), dim=1).double()  # one fit per fold serves every target
    widths = [target.shape[1] for target in targets.values()]
    reason = too_few_rows(n_rows, n_features, folds)
    probes: dict[str, list[float]] = {name: [] for name in targets}
    for features in residuals:
        if reason is not None or not (torch.isfinite(features).all() and torch.isfinite(stacked).all()):
            for values in probes.values():
                values.append(float("nan"))  # too few rows, or a diverged model: keep NaN off the solver
            continue
        predictions = cross_validated_predictions(features, stacked, folds).split(widths, dim=1)
        for values, predicted, target in zip(probes.values(), predictions, stacked.split(widths, dim=1)):
            values.append(r2(predicted, target))
    section: dict[str, int | float | str] = {"sequences": n_rows, "folds": folds, "features": n_features}
    return probes, section | ({"reason": reason} if reason else {})
