"""The processed copy that weight-based analyses read, and guards that keep NaN/inf weights off linalg kernels."""

from __future__ import annotations

import copy
import re
import weakref

import torch
from transformer_lens import FactoredMatrix, HookedTransformer
from transformer_lens.weight_processing import ProcessWeights

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


def centres_writing_weights(cfg) -> bool:
    """Whether `processed_copy` centres the writing weights: TransformerLens does so only under LN or LNPre (every
    reader then subtracts the mean first), so the processed residual stream is the real one less its mean."""
    return cfg.normalization_type in ("LN", "LNPre") and not getattr(cfg, "final_rms", False)


def processed_view(model: HookedTransformer, center_unembed: bool) -> HookedTransformer:
    """`processed_copy(model, center_unembed)`, kept and refilled in place on every call for the same `model`.

    For snapshots of a model that keeps training: the first call makes the processed copy, later
    calls load `model`'s current weights into it, processed, without another deep copy of the
    module tree. The result is valid until the next call for the same model; use `processed_copy`
    for one to keep.
    """
    key = (bool(center_unembed), model.cfg.device, str(model.W_E.device))
    cached = _VIEWS.get(model)
    if cached is None or cached[0] != key:
        processed = processed_copy(model, center_unembed)
        _VIEWS[model] = (key, processed)
        return processed
    processed = cached[1]
    state = {name: tensor.detach().float().clone() for name, tensor in model.state_dict().items()}
    foldable = model.cfg.normalization_type in FOLDABLE_NORMS
    if foldable:
        _fold_norm_scales_of_state(state, model.cfg)
    state = ProcessWeights.process_weights(
        model.fill_missing_keys(state),
        processed.cfg,
        fold_ln=foldable,
        center_writing_weights=True,
        center_unembed=center_unembed,
        fold_value_biases=True,
    )
    # The folded norms' w and b stay in the state dict (1 and 0); the processed copy has no such parameters.
    loaded = processed.load_state_dict(state, strict=False)
    unexpected = [name for name in loaded.unexpected_keys if not re.search(r"(^|\.)(ln1|ln2|ln_final)\.[wb]$", name)]
    if loaded.missing_keys or unexpected:
        raise RuntimeError(
            f"processed view of {model.cfg.model_name}: missing {loaded.missing_keys}, unexpected {unexpected}"
        )
    return processed


_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fold_into(
    scale: torch.Tensor, bias: torch.Tensor | None, weights: list[tuple[torch.Tensor, torch.Tensor]]
) -> None:
    """Fold a norm's scale (and bias) into the (W [.. d_model out], b [.. out]) pairs reading it; leave it 1 (and 0)."""
    for W, b in weights:
        if bias is not None:
            b.add_(torch.einsum("d,...do->...o", bias, W))
        W.mul_(scale[:, None])
    scale.fill_(1.0)
    if bias is not None:
        bias.zero_()


def _norm_readers(cfg) -> list[tuple[str, list[tuple[str, str]]]]:
    """Each norm (by its state-dict prefix) and the (W, b) names of the weights that read from it."""
    readers = []
    for layer in range(cfg.n_layers):
        attn = f"blocks.{layer}.attn"
        readers.append((f"blocks.{layer}.ln1", [(f"{attn}.W_{x}", f"{attn}.b_{x}") for x in "QKV"]))
        if not cfg.attn_only:
            readers.append((f"blocks.{layer}.ln2", [(f"blocks.{layer}.mlp.W_in", f"blocks.{layer}.mlp.b_in")]))
    readers.append(("ln_final", [("unembed.W_U", "unembed.b_U")]))
    return readers


@torch.no_grad()
def _fold_norm_scales(model: HookedTransformer) -> None:
    """Fold every norm's scale and bias into the weights reading it, in place, before `process_weights_`.

    TransformerLens 3.9's fold tells its weight layouts apart by shape and multiplies the wrong axis
    of a square matrix (d_vocab == d_model, or d_mlp == d_model); folding here first leaves it only
    norms of 1 and 0 to fold, which any axis gets right. It still centres the reading weights and
    turns LN into LNPre.
    """
    parameters = dict(model.named_parameters())
    _fold_norm_scales_of_state(parameters, model.cfg)


def _fold_norm_scales_of_state(state: dict[str, torch.Tensor], cfg) -> None:
    """`_fold_norm_scales` on a state dict (or a dict of the parameters themselves), in place."""
    for norm, readers in _norm_readers(cfg):
        _fold_into(state[f"{norm}.w"], state.get(f"{norm}.b"), [(state[W], state[b]) for W, b in readers])


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
