"""Weight-based circuits of a processed model: OV/QK circuits; copying, eigen, singular-value, composition scores.

Every function here reads weights only; pass it `processed_copy(model)` so LayerNorm scales sit in
the weights, as every circuit reading assumes.
"""

from __future__ import annotations

import einops
import torch
from jaxtyping import Float
from transformer_lens import FactoredMatrix, HookedTransformer

from lit_interp.analysis.weights import eigenvalues, finite_matrices, singular_values

HeadScores = Float[torch.Tensor, "layer head"]
COMPOSITION_MODES = ("q", "k", "v")


def full_ov_circuits(model: HookedTransformer) -> Float[torch.Tensor, "layer head d_vocab d_vocab_out"]:
    """W_E W_OV W_U per head: row s is what the head adds to the output when it attends only to input s (seed 001)."""
    return (model.W_E @ model.W_V) @ (model.W_O @ model.W_U)


def ov_copying_scores(full_ov: Float[torch.Tensor, "layer head d_vocab d_vocab_out"]) -> HeadScores:
    """Fraction of source tokens whose top logit in the full OV circuit is the token itself (NaN if not finite)."""
    sources = torch.arange(full_ov.shape[-2], device=full_ov.device)
    scores = (full_ov.argmax(-1) == sources).float().mean(-1)
    return torch.where(finite_matrices(full_ov), scores, torch.nan)


def eigenvalue_scores(circuit: FactoredMatrix) -> HeadScores:
    """Σλ / Σ|λ| of each head's matrix in `circuit` [layer head ...] (seed 002): +1 when every eigenvalue is positive.

    Read from the d_head x d_head product BA, whose eigenvalues are AB's apart from zeros (which add nothing).
    """
    values = eigenvalues(circuit)
    return (values.sum(-1) / values.abs().sum(-1)).real


def full_ov_factored(model: HookedTransformer) -> FactoredMatrix:
    """W_E W_OV W_U per head as a FactoredMatrix [layer head shared shared], never formed: input to output, direct.

    For tokens, row s is what the head adds to the logits when it attends to token s; for the
    recurrence, W_E is the linear input map and W_U the output map, so it takes an attended input
    vector to what the head adds to the predicted vector (through ln_final's weight, not its scale).
    Copying reads input id s against output id s (as `ov_copying_scores` does), so where the input
    vocabulary is larger than the output's (an extra "=" token) only the shared ids are kept: a square
    circuit, whose eigenvalues exist.
    """
    shared = min(model.cfg.d_vocab, model.cfg.d_vocab_out)
    return model.W_E[:shared] @ model.OV @ model.W_U[:, :shared]


def effective_rank(
    singular: Float[torch.Tensor, "*heads d_head"], energy: float = 0.95
) -> Float[torch.Tensor, "*heads"]:
    """The fewest singular values whose squares hold `energy` of the total (0 for a zero matrix, NaN if not finite)."""
    squared = singular.pow(2)
    total = squared.sum(-1, keepdim=True)
    reached = squared.cumsum(-1) >= energy * total * (1 - 1e-6)  # rounding must not lose the last value
    rank = (~reached).sum(-1).float() + 1
    rank = torch.where(total[..., 0] > 0, rank, 0.0)
    return torch.where(torch.isfinite(total[..., 0]), rank, torch.nan)


def head_singular_values(model: HookedTransformer) -> dict[str, Float[torch.Tensor, "layer head d_head"]]:
    """Singular values of each head's OV and QK matrix (seed 002), descending."""
    return {"ov": singular_values(model.OV), "qk": singular_values(model.QK)}


def _squared_norm(left_gram: torch.Tensor, right_gram: torch.Tensor) -> torch.Tensor:
    """|A B|_F² = Σ (AᵀA) ⊙ (B Bᵀ), for a product known through its Gram matrices."""
    return (left_gram * right_gram).sum((-2, -1)).clamp(min=0)


def composition_scores(model: HookedTransformer) -> dict[str, Float[torch.Tensor, "writer reader"]]:
    """Q-, K- and V-composition scores |W_OV^w W^r| / (|W_OV^w| |W^r|) as [head head] in `all_head_labels()` order.

    The numbers of `model.all_composition_scores` (tested equal), computed through d_head x d_head
    Gram matrices instead of an SVD of every (writer, reader) product: several times faster at our
    sizes, on every snapshot. Entries whose reader is not in a later layer than the writer are 0;
    the later-layer entries are NaN when any OV or QK matrix is not finite.
    """
    layer = torch.arange(model.cfg.n_layers, device=model.W_O.device).repeat_interleave(model.cfg.n_heads)
    later = layer[:, None] < layer[None, :]
    if not (finite_matrices(model.OV.BA).all() and finite_matrices(model.QK.BA).all()):
        return {mode: torch.where(later, torch.nan, 0.0) for mode in COMPOSITION_MODES}
    writer_V, writer_O = (
        model.OV.A.flatten(0, 1),
        model.OV.B.flatten(0, 1),
    )  # [head d_model d_head], [head d_head d_model]
    writer_gram = writer_V.mT @ writer_V
    writer_norm = _squared_norm(writer_gram, writer_O @ writer_O.mT).sqrt()
    readers = {"q": model.QK, "k": model.QK.T, "v": model.OV}
    scores = {}
    for mode, reader in readers.items():
        reader_A, reader_B = reader.A.flatten(0, 1), reader.B.flatten(0, 1)
        reader_gram = reader_B @ reader_B.mT
        reader_norm = _squared_norm(reader_A.mT @ reader_A, reader_gram).sqrt()
        # W_OV^w R^r = V_w (O_w A_r) B_r, so its squared norm needs only the d_head x d_head middle O_w A_r.
        middle = einops.einsum(writer_O, reader_A, "w h d, r d k -> w r h k")
        product_norm = _squared_norm(writer_gram[:, None], middle @ reader_gram[None] @ middle.mT).sqrt()
        score = product_norm / (writer_norm[:, None] * reader_norm[None, :])
        scores[mode] = torch.where(later, score, torch.zeros_like(score))
    return scores


def full_qk_circuits(model: HookedTransformer) -> Float[torch.Tensor, "layer head d_vocab d_vocab"]:
    """W_E W_QK W_Eᵀ per head (seed 001): entry (q, k) is the score query input q gives key input k, direct path."""
    return (model.W_E @ model.W_Q) @ (model.W_K.mT @ model.W_E.T)


def has_positional_embeddings(model: HookedTransformer) -> bool:
    """Learned positions in the residual stream: standard embeddings that are not all zero (seeds 001/004 zero them)."""
    return model.cfg.positional_embedding_type == "standard" and bool(model.W_pos.abs().max() > 0)


def positional_qk_circuits(model: HookedTransformer) -> Float[torch.Tensor, "layer head pos pos"]:
    """W_pos W_QK W_posᵀ per head: the score query position gives key position, positions alone."""
    return (model.W_pos @ model.W_Q) @ (model.W_K.mT @ model.W_pos.T)


def kq_composition_circuits(model: HookedTransformer) -> Float[torch.Tensor, "writer reader d_vocab d_vocab"]:
    """W_E W_OV⁰ W_QK¹ (W_E W_OV⁰)ᵀ for each layer-0 writer and layer-1 reader head (seed 001).

    Entry (q, k): the layer-1 score when the writer attended to input q at the query and to input k at the key.
    """
    moved = model.W_E @ model.OV[0].AB  # [writer d_vocab d_model]
    return (moved[:, None] @ model.QK[1].AB[None]) @ moved[:, None].mT


def ov_neuron_circuits(model: HookedTransformer) -> Float[torch.Tensor, "layer head d_vocab d_mlp"]:
    """W_E W_OV W_in of the same layer's MLP (seed 004): what each neuron reads when the head attends to input s."""
    return (model.W_E @ model.W_V) @ (model.W_O @ model.W_in[:, None])


def embedding_subspace(W_E: Float[torch.Tensor, "d_vocab d_model"]) -> Float[torch.Tensor, "d_model rank"]:
    """An orthonormal basis of the residual directions the embedding writes to (the row space of W_E)."""
    if not torch.isfinite(W_E).all():
        return torch.full((W_E.shape[1], 0), torch.nan, device=W_E.device)
    _, singular, right = torch.linalg.svd(W_E, full_matrices=False)
    return right[singular > singular.max() * 1e-5].T
