"""Seed 002's OV summaries for vector tasks: the linear fit of a layer's summed OV map, large entries, the maps."""

from __future__ import annotations

import einops
import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

from lit_interp.analysis.weights import finite_matrices

# Seed 002's threshold on |W_OV| entries (of the processed d_model x d_model matrix).
LARGE_ENTRY = 0.05
RANDOM_VECTORS = 1024  # seed 002 fits 1300 random vectors (100 x 13); as many as a probe batch's inputs
RANDOM_SEED = 0


def unit_vectors(vectors: Float[torch.Tensor, "n d_vocab"]) -> Float[torch.Tensor, "n d_vocab"]:
    return vectors / vectors.norm(dim=-1, keepdim=True)


def random_unit_vectors(n: int, d_vocab: int, device: torch.device | str = "cpu") -> Float[torch.Tensor, "n d_vocab"]:
    """Seed 002's random inputs: entries uniform in [0, 1) (`torch.rand`, seeded here), scaled to unit norm."""
    generator = torch.Generator().manual_seed(RANDOM_SEED)
    return unit_vectors(torch.rand(n, d_vocab, generator=generator)).to(device)


def summed_ov_maps(model: HookedTransformer) -> Float[torch.Tensor, "layer d_vocab d_model"]:
    """W_E Σ_h W_OV^h per layer: what the layer's heads together write when each attends only to input x."""
    summed_ov = einops.einsum(model.W_V, model.W_O, "layer head m d, layer head d n -> layer m n")
    return model.W_E @ summed_ov


def summed_ov_outputs(
    model: HookedTransformer, inputs: Float[torch.Tensor, "n d_vocab"], layer: int
) -> Float[torch.Tensor, "n d_vocab"]:
    """Seed 002's map x -> ln_final(x W_E Σ_h W_OV^h) W_U: what the layer's heads together write, read as output.

    `model` must be processed (LayerNorm folded): ln_final is then a bare normalisation and W_U
    carries its scale. The unembedding bias is left out, as the seed does.
    """
    return _read_out(model, inputs @ summed_ov_maps(model)[layer])


def _read_out(model: HookedTransformer, moved: Float[torch.Tensor, "n d_model"]) -> Float[torch.Tensor, "n d_vocab"]:
    if model.cfg.normalization_type is not None:  # a model without norms has no ln_final
        moved = model.ln_final(moved[:, None])[:, 0]
    return moved @ model.W_U


def linear_fit(
    inputs: Float[torch.Tensor, "n d"], outputs: Float[torch.Tensor, "n d"]
) -> tuple[Float[torch.Tensor, " n"], Float[torch.Tensor, " n"]]:
    """Per row, the least-squares slope and R² of outputs on inputs across the d entries (`scipy.stats.linregress`).

    NaN for a row whose inputs or outputs do not vary (no line to fit) or are not finite.
    """
    x, y = inputs - inputs.mean(-1, keepdim=True), outputs - outputs.mean(-1, keepdim=True)
    covariance, x_var, y_var = (x * y).sum(-1), x.pow(2).sum(-1), y.pow(2).sum(-1)
    fits = (x_var > 0) & (y_var > 0)
    slope = torch.where(fits, covariance / x_var, torch.nan)
    r2 = torch.where(fits, covariance.pow(2) / (x_var * y_var), torch.nan)
    return slope, r2


def summed_ov_fit(
    model: HookedTransformer, inputs: Float[torch.Tensor, "n d_vocab"]
) -> dict[str, Float[torch.Tensor, " layer"]]:
    """Mean slope and R² of the line through (x_i, f(x_i)_i) for each unit input x, f = `summed_ov_outputs`, per layer.

    Seed 002 fits layer 0 on recurrence vectors and on random vectors (mean R² 0.60 on its model:
    the layer adds roughly a multiple of the attended vector). Inputs are scaled to unit norm here. Requires
    d_vocab_out == d_vocab (output and input in one space).
    """
    inputs = unit_vectors(inputs)
    slopes, r2s = [], []
    for summed in summed_ov_maps(model):
        slope, r2 = linear_fit(inputs, _read_out(model, inputs @ summed))
        slopes.append(slope.mean())
        r2s.append(r2.mean())
    return {"slope": torch.stack(slopes), "r2": torch.stack(r2s)}


def large_entry_fraction(
    matrices: Float[torch.Tensor, "*heads row col"], threshold: float = LARGE_ENTRY
) -> Float[torch.Tensor, "*heads"]:
    """Fraction of entries with |value| > threshold (seed 002: 0.0083 of W_OV's for its L1H0); NaN if not finite.

    An absolute threshold: it depends on the scale of the weights, so compare heads of one model.
    """
    fraction = (matrices.abs() > threshold).float().mean((-2, -1))
    return torch.where(finite_matrices(matrices), fraction, torch.nan)
