"""Modular addition's Fourier progress measures (Nanda et al. 2023): spectra, key frequencies, restricted loss.

Over the p residues x, the Fourier basis is the constant and, for each frequency k = 1..(p-1)/2,
cos(w_k x) and sin(w_k x) with w_k = 2πk/p, each row normalised: component 0 is the constant,
2k-1 the cosine and 2k the sine of frequency k. The algorithm the paper found computes
cos(w_k(a+b-c)) for a few key frequencies k; the restricted and excluded losses keep or remove,
in the logit table over all pairs (a, b), the components along cos(w_k(a+b)) and sin(w_k(a+b)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from transformer_lens import HookedTransformer, utils

from lit_interp.tasks.modular_addition import pair_tokens

# A neuron belongs to the frequency that explains at least this share of its variance over (a, b).
NEURON_FRACTION = 0.5
# A key frequency is the frequency of at least this share of the neurons (each neuron counted once).
KEY_NEURON_SHARE = 0.02


def n_frequencies(p: int) -> int:
    return (p - 1) // 2


def fourier_basis(p: int, dtype: torch.dtype = torch.float64) -> Float[torch.Tensor, "component x"]:
    """The p orthonormal rows: constant, then cos(w_k x), sin(w_k x) for k = 1..(p-1)/2 (p odd)."""
    x = torch.arange(p, dtype=dtype)
    rows = [torch.ones(p, dtype=dtype)]
    for k in range(1, n_frequencies(p) + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
    basis = torch.stack(rows)
    return basis / basis.norm(dim=-1, keepdim=True)


def component_names(p: int) -> list[str]:
    """`const`, `cos 1`, `sin 1`, ... in the order of `fourier_basis`."""
    return ["const"] + [f"{kind} {k}" for k in range(1, n_frequencies(p) + 1) for kind in ("cos", "sin")]


def frequency_norms(component_norms: Float[torch.Tensor, "... component"]) -> Float[torch.Tensor, "... frequency"]:
    """sqrt(cos² + sin²) of each frequency k = 1..(p-1)/2 (entry k-1) from the norms of the p components."""
    pairs = component_norms[..., 1:].unflatten(-1, (-1, 2))
    return pairs.pow(2).sum(-1).sqrt()


def embedding_fourier_norms(W_E: Float[torch.Tensor, "p d_model"]) -> Float[torch.Tensor, " component"]:
    """The norm of each Fourier component of the embedding over the p number tokens: ‖(F W_E)_i‖."""
    p = W_E.shape[0]
    return (fourier_basis(p).to(W_E.device) @ W_E.double()).norm(dim=-1).float()


def neuron_logit_fourier_norms(
    W_out: Float[torch.Tensor, "d_mlp d_model"], W_U: Float[torch.Tensor, "d_model p"]
) -> Float[torch.Tensor, " component"]:
    """The norm over neurons of each Fourier component (over the output c) of the neuron-logit map W_L = W_out W_U."""
    W_L = W_out.double() @ W_U.double()
    return (W_L @ fourier_basis(W_U.shape[-1]).to(W_L.device).T).norm(dim=0).float()


def gini(values: Float[torch.Tensor, " n"]) -> float:
    """The Gini coefficient of non-negative values: 0 when all are equal, (n-1)/n when one holds everything.

    NaN when the values are not finite or all zero (no distribution to be unequal)."""
    values = values.double().flatten()
    if not torch.isfinite(values).all() or values.sum() <= 0:
        return float("nan")
    ranked, _ = values.sort()
    n = len(ranked)
    weights = 2 * torch.arange(1, n + 1, dtype=torch.float64) - n - 1
    return float((weights * ranked).sum() / (n * ranked.sum()))


def neuron_fourier(
    activations: Float[torch.Tensor, "a b d_mlp"],
) -> Float[torch.Tensor, "a_component b_component d_mlp"]:
    """Each neuron's activation over all pairs (a, b) in the 2-D Fourier basis: F A Fᵀ per neuron."""
    basis = fourier_basis(activations.shape[0]).to(activations.device)
    # One axis at a time: a single three-operand einsum was ~30x slower on CPU at p = 113.
    over_a = torch.tensordot(basis, activations.double(), dims=([1], [0]))
    return torch.einsum("jb,ibn->ijn", basis, over_a)


def frequency_fractions(spectrum: Float[torch.Tensor, "a_component b_component d_mlp"]) -> torch.Tensor:
    """`[frequency d_mlp]`: the share of each neuron's variance over (a, b) held by each frequency k.

    Frequency k's terms are its 3x3 block of components {const, cos k, sin k}² but the constant
    (1, cos w_k a, …, sin w_k a sin w_k b); the variance is the squared norm of every component but
    the constant. Blocks meet only at the constant, so a neuron's shares sum to at most 1 (the rest
    is terms mixing two frequencies). NaN for a neuron with no variance (dead or constant).
    """
    energy = spectrum.pow(2)
    variance = energy.sum((0, 1)) - energy[0, 0]
    shares = []
    for k in range(1, n_frequencies(spectrum.shape[0]) + 1):
        index = torch.tensor([0, 2 * k - 1, 2 * k], device=spectrum.device)
        shares.append(energy[index][:, index].sum((0, 1)) - energy[0, 0])
    variance = torch.where(variance > 0, variance, torch.nan)
    return torch.stack(shares) / variance


def neuron_frequencies(fractions: Float[torch.Tensor, "frequency d_mlp"]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each neuron's frequency (1-based; 0 for a neuron with no variance) and the share of its variance it holds."""
    best = fractions.nan_to_num(-1.0).max(0)
    frequency = torch.where(best.values >= 0, best.indices + 1, 0)
    return frequency, torch.where(best.values >= 0, best.values, torch.nan)


def key_frequencies(frequency: torch.Tensor, fraction: torch.Tensor) -> list[int]:
    """The frequencies that carry the neurons: each the frequency of at least `KEY_NEURON_SHARE` of all neurons,
    counting a neuron when its frequency explains at least `NEURON_FRACTION` of its variance; ascending."""
    explained = frequency[fraction.nan_to_num(0.0) >= NEURON_FRACTION]
    counts = torch.bincount(explained, minlength=1).tolist()
    needed = max(1, math.ceil(KEY_NEURON_SHARE * len(frequency)))
    return [k for k in range(1, len(counts)) if counts[k] >= needed]


def sum_directions(p: int, frequencies: list[int]) -> Float[torch.Tensor, "direction pair"]:
    """Unit vectors over the p² pairs (pair id a·p + b): cos(w_k(a+b)), sin(w_k(a+b)) for each k given, in turn."""
    total = (torch.arange(p)[:, None] + torch.arange(p)[None, :]).flatten().double()
    rows = [f(2 * math.pi * k * total / p) for k in frequencies for f in (torch.cos, torch.sin)]
    if not rows:
        return torch.zeros(0, p * p, dtype=torch.float64)
    directions = torch.stack(rows)
    return directions / directions.norm(dim=-1, keepdim=True)


def all_pairs_run(model: HookedTransformer, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits at `=` over every pair `[p² c]` (row a·p + b) and the last layer's neurons there `[a b d_mlp]`."""
    tokens = pair_tokens(torch.arange(p * p, device=model.W_E.device), p)
    layer = model.cfg.n_layers - 1
    logits, cache = model.run_with_cache(tokens, names_filter=utils.get_act_name("post", layer))
    return logits[:, -1], cache["post", layer][:, -1].reshape(p, p, -1)


def logit_sum_coefficients(logits: Float[torch.Tensor, "pair c"]) -> Float[torch.Tensor, "direction c"]:
    """The logit table's coefficient along cos(w_k(a+b)) and sin(w_k(a+b)) for every k = 1..(p-1)/2, per output c:
    row 2(k-1) the cosine, 2k-1 the sine. With the mean over pairs, it is all the restricted loss reads."""
    p = math.isqrt(logits.shape[0])
    return sum_directions(p, list(range(1, n_frequencies(p) + 1))).to(logits.device) @ logits.double()


def _key_part(coefficients: torch.Tensor, frequencies: list[int], pair_ids: torch.Tensor) -> torch.Tensor:
    """The logits' part along the key frequencies' (a+b) directions, at the rows `pair_ids`."""
    p = coefficients.shape[-1]
    rows = torch.tensor([2 * (k - 1) + offset for k in frequencies for offset in (0, 1)], dtype=torch.long)
    directions = sum_directions(p, frequencies).to(coefficients.device)[:, pair_ids.long()]
    return directions.T @ coefficients.double()[rows.to(coefficients.device)]


def pair_labels(pair_ids: torch.Tensor, p: int) -> torch.Tensor:
    pair_ids = pair_ids.long()
    return (pair_ids // p + pair_ids % p) % p


def restricted_loss(mean_logits: torch.Tensor, coefficients: torch.Tensor, frequencies: list[int]) -> float:
    """Cross-entropy over all p² pairs of the logits with only the key frequencies' (a+b) terms kept, plus each
    output's mean over all pairs (the paper's bias correction)."""
    p = len(mean_logits)
    pairs = torch.arange(p * p, device=coefficients.device)
    logits = mean_logits.double()[None] + _key_part(coefficients, frequencies, pairs)
    return F.cross_entropy(logits, pair_labels(pairs, p)).item()


def excluded_loss(
    train_logits: torch.Tensor, train_pairs: torch.Tensor, coefficients: torch.Tensor, frequencies: list[int]
) -> float:
    """Cross-entropy on the training pairs of their logits with the key frequencies' (a+b) terms removed."""
    logits = train_logits.double() - _key_part(coefficients, frequencies, train_pairs)
    return F.cross_entropy(logits, pair_labels(train_pairs, coefficients.shape[-1])).item()


def losses_with(tensors: dict[str, torch.Tensor], frequencies: list[int]) -> dict[str, float]:
    """Restricted and excluded loss of a snapshot, from its tensors, with other key frequencies than its own: the
    paper measures every checkpoint with the final model's."""
    coefficients = tensors["logit_sum_coefficients"]
    return {
        "restricted_loss": restricted_loss(tensors["logit_mean"], coefficients, frequencies),
        "excluded_loss": excluded_loss(tensors["train_logits"], tensors["train_pairs"], coefficients, frequencies),
    }


def pair_loss_and_accuracy(logits: Float[torch.Tensor, "pair c"], pair_ids: torch.Tensor) -> tuple[float, float]:
    """Cross-entropy and accuracy of the logit rows `pair_ids` (a·p + b) against (a + b) mod p."""
    labels = pair_labels(pair_ids, logits.shape[-1]).to(logits.device)
    rows = logits[pair_ids.long()].double()
    accuracy = (rows.argmax(-1) == labels).double().mean().item() if rows.isfinite().all() else float("nan")
    return F.cross_entropy(rows, labels).item(), accuracy


def sum_squared_weights(model: torch.nn.Module) -> float:
    """The total of every parameter's squared entries (what weight decay shrinks)."""
    return float(sum(parameter.detach().double().pow(2).sum() for parameter in model.parameters()))
