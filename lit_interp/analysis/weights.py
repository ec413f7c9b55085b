"""The processed copy that weight-based analyses read, and guards that keep NaN/inf weights off linalg kernels."""

from __future__ import annotations

import copy

import torch
from transformer_lens import FactoredMatrix, HookedTransformer

# Norms with a learned scale (and LN's bias) to fold into the weights that read from them; the "Pre"
# norms have none, and TransformerLens warns when asked to fold them.
FOLDABLE_NORMS = ("LN", "RMS")


def processed_copy(model: HookedTransformer, center_unembed: bool) -> HookedTransformer:
    """A deep fp32 copy with LayerNorm folded, writing weights centred and value biases folded (`process_weights_`).

    The copy computes what `model` computes (token logits up to a constant per position when the
    unembedding is centred), but its W_E, W_Q, W_K, W_V, W_O, W_U carry the LayerNorm scales that
    sit between them, as every circuit reading assumes. `model` is never touched. Pass
    `center_unembed=False` for a regression head: its output is read as a vector, not through a
    softmax, so subtracting the mean over output dimensions would change the prediction. Centring the
    writing weights (W_E included, even where W_E is a linear map from input vectors) is exact whenever
    every reader of the residual stream is an LN that subtracts the mean first; TransformerLens only
    centres them then.
    """
    processed = copy.deepcopy(model).float()
    foldable = model.cfg.normalization_type in FOLDABLE_NORMS
    if foldable:
        _fold_norm_scales(processed)
    processed.process_weights_(fold_ln=foldable, center_writing_weights=True, center_unembed=center_unembed)
    processed.eval()
    return processed


def _fold_into(norm: torch.nn.Module, weights: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Fold a norm's scale (and bias) into the (W [.. d_model out], b [.. out]) pairs reading it; leave it 1 (and 0)."""
    bias = getattr(norm, "b", None)
    for W, b in weights:
        if bias is not None:
            b.add_(torch.einsum("d,...do->...o", bias, W))
        W.mul_(norm.w[:, None])
    norm.w.fill_(1.0)
    if bias is not None:
        bias.zero_()


@torch.no_grad()
def _fold_norm_scales(model: HookedTransformer) -> None:
    """Fold every norm's scale and bias into the weights reading it, in place, before `process_weights_`.

    TransformerLens 3.9's fold tells its weight layouts apart by shape and multiplies the wrong axis
    of a square matrix (d_vocab == d_model, or d_mlp == d_model); folding here first leaves it only
    norms of 1 and 0 to fold, which any axis gets right. It still centres the reading weights and
    turns LN into LNPre.
    """
    for block in model.blocks:
        attn = block.attn
        _fold_into(block.ln1, [(attn.W_Q, attn.b_Q), (attn.W_K, attn.b_K), (attn.W_V, attn.b_V)])
        if not model.cfg.attn_only:
            _fold_into(block.ln2, [(block.mlp.W_in, block.mlp.b_in)])
    _fold_into(model.ln_final, [(model.unembed.W_U, model.unembed.b_U)])


def finite_matrices(matrices: torch.Tensor) -> torch.Tensor:
    """Which matrices [*leading row col] hold only finite numbers: a bool mask [*leading]."""
    return torch.isfinite(matrices).all(-1).all(-1)


def eigenvalues(circuit: FactoredMatrix) -> torch.Tensor:
    """`circuit.eigenvalues` [*leading d_head] on CPU, NaN for matrices with a NaN/inf entry.

    torch.linalg.eig crashes the process (not an exception) on a non-finite CPU matrix, so those never
    reach it. BA is d_head x d_head: on CPU, where CUDA's eig would synchronise for a tiny matrix.
    """
    A, B = circuit.A.float().cpu(), circuit.B.float().cpu()
    ok = finite_matrices(FactoredMatrix(A, B).BA)
    values = torch.full((*ok.shape, circuit.mdim), complex(float("nan"), float("nan")), dtype=torch.complex64)
    if ok.any():
        values[ok] = FactoredMatrix(A[ok], B[ok]).eigenvalues.to(torch.complex64)
    return values


def singular_values(circuit: FactoredMatrix) -> torch.Tensor:
    """`circuit.S` [*leading d_head], descending; NaN for matrices with a NaN/inf entry (SVD would raise)."""
    A, B = circuit.A.float(), circuit.B.float()
    ok = finite_matrices(FactoredMatrix(A, B).BA)  # a NaN/inf in A or B, or an overflow, shows up in BA
    values = torch.full((*ok.shape, circuit.mdim), float("nan"), device=A.device)
    if ok.any():
        values[ok] = FactoredMatrix(A[ok], B[ok]).S
    return values
