"""Weight-based circuits: full OV circuit and copying score, eigenvalue and composition scores, direct attribution."""

from __future__ import annotations

import einops
import torch
from jaxtyping import Float, Int
from transformer_lens import ActivationCache, FactoredMatrix, HookedTransformer

HeadScores = Float[torch.Tensor, "layer head"]


def full_ov_circuits(model: HookedTransformer) -> Float[torch.Tensor, "layer head d_vocab d_vocab_out"]:
    """W_E W_OV W_U per head: row s is what the head adds to the output when it attends only to input s (seed 001)."""
    return (model.W_E @ model.W_V) @ (model.W_O @ model.W_U)


def ov_copying_scores(full_ov: Float[torch.Tensor, "layer head d_vocab d_vocab_out"]) -> HeadScores:
    """Fraction of source tokens whose top logit in the full OV circuit is the token itself."""
    sources = torch.arange(full_ov.shape[-2], device=full_ov.device)
    return (full_ov.argmax(-1) == sources).float().mean(-1)


def eigenvalue_scores(circuit: FactoredMatrix) -> HeadScores:
    """Σλ / Σ|λ| of each head's OV or QK matrix (seed 002): +1 copies / attends to itself, -1 the opposite."""
    # BA [d_head d_head] has AB's eigenvalues bar zeros; it is tiny, so on CPU (CUDA's eig syncs and is slow here).
    eigenvalues = torch.linalg.eigvals(circuit.BA.float().cpu())
    return (eigenvalues.sum(-1) / eigenvalues.abs().sum(-1)).real


def _squared_norm(left_gram: torch.Tensor, right_gram: torch.Tensor) -> torch.Tensor:
    """|A B|_F² = Σ (AᵀA) ⊙ (B Bᵀ), for a product known through its Gram matrices."""
    return (left_gram * right_gram).sum((-2, -1)).clamp(min=0)


def composition_scores(model: HookedTransformer) -> dict[str, Float[torch.Tensor, "writer reader"]]:
    """Q-, K- and V-composition scores |W_OV^writer W^reader| / (|W_OV^writer| |W^reader|) (seed 002).

    Rows (writers) and columns (readers) are heads in `model.all_head_labels()` order; entries whose
    reading head is not in a later layer than the writing head are 0, as in TransformerLens.
    Norms go through d_head x d_head Gram matrices, never forming a d_model x d_model product.
    """
    writer_V, writer_O = model.OV.A.flatten(0, 1), model.OV.B.flatten(0, 1)  # [head d_model d_head], [head d_head d_model]
    writer_gram = writer_V.mT @ writer_V
    writer_norm = _squared_norm(writer_gram, writer_O @ writer_O.mT).sqrt()
    layer = torch.arange(model.cfg.n_layers, device=writer_V.device).repeat_interleave(model.cfg.n_heads)
    later = layer[:, None] < layer[None, :]
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


def _through_final_norm(model: HookedTransformer, cache: ActivationCache, residual: torch.Tensor, first_pos: int) -> torch.Tensor:
    """Apply ln_final's linear part to a residual component [batch pos head d_model], using the cached scale."""
    norm = model.cfg.normalization_type
    if norm is None:
        return residual
    if norm.startswith("LN"):
        residual = residual - residual.mean(-1, keepdim=True)
    residual = residual / cache["ln_final.hook_scale"][:, first_pos:, None]
    if norm in ("LN", "RMS"):
        residual = residual * model.ln_final.w
    return residual


def _correct_direction(model: HookedTransformer, targets: torch.Tensor) -> Float[torch.Tensor, "batch pos d_model"]:
    """The residual direction that raises the correct output: correct minus mean logit, or the target vector."""
    if targets.is_floating_point():
        return einops.einsum(model.W_U, targets, "d_model d_vocab, batch pos d_vocab -> batch pos d_model")
    W_U = model.W_U - model.W_U.mean(-1, keepdim=True)
    return einops.rearrange(W_U[:, targets], "d_model batch pos -> batch pos d_model")


def direct_attribution(
    model: HookedTransformer,
    cache: ActivationCache,
    targets: Int[torch.Tensor, "batch pos"] | Float[torch.Tensor, "batch pos d_vocab"],
    first_target_pos: int,
) -> Float[torch.Tensor, "layer head target_pos"]:
    """Each head's direct effect on the correct output at positions first_target_pos.., averaged over the batch.

    Token tasks: the head's output through the final norm's cached scale onto the correct logit
    minus the mean logit (seed 003). Vector tasks: onto W_U times the target vector (seed 002).
    """
    direction = _correct_direction(model, targets)
    attributions = []
    for layer in range(model.cfg.n_layers):
        z = cache["z", layer][:, first_target_pos:]
        head_out = einops.einsum(z, model.W_O[layer], "batch pos head d_head, head d_head d_model -> batch pos head d_model")
        head_out = _through_final_norm(model, cache, head_out, first_target_pos)
        attribution = einops.einsum(head_out, direction, "batch pos head d_model, batch pos d_model -> head pos")
        attributions.append(attribution / z.shape[0])
    return torch.stack(attributions)
