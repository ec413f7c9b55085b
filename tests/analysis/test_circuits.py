"""Full OV circuit, copying and eigenvalue scores, composition scores, and direct attribution."""

from __future__ import annotations

import pytest
import torch

from lit_interp.analysis.circuits import composition_scores, direct_attribution, eigenvalue_scores, full_ov_circuits, ov_copying_scores
from lit_interp.tasks.affine_recurrence import AffineRecurrenceModule
from lit_interp.tasks.bos_ints import BosIntsModule

from .conftest import hooked


def identity_ov_model(sign: float = 1.0):
    """W_E, W_V, W_U identities and W_O = sign * identity: the full OV circuit is sign * I."""
    model = hooked()
    with torch.no_grad():
        model.embed.W_E[:] = torch.eye(16)
        model.unembed.W_U[:] = torch.eye(16)
        model.blocks[0].attn.W_V[0] = torch.eye(16)
        model.blocks[0].attn.W_O[0] = sign * torch.eye(16)
        model.blocks[0].attn.W_Q[0] = sign * torch.eye(16)
        model.blocks[0].attn.W_K[0] = torch.eye(16)
    return model


def test_identity_ov_circuit_copies_every_token():
    full_ov = full_ov_circuits(identity_ov_model())
    assert full_ov.shape == (1, 1, 16, 16)
    torch.testing.assert_close(full_ov[0, 0], torch.eye(16))
    assert ov_copying_scores(full_ov).item() == 1.0


def test_negated_ov_circuit_copies_nothing():
    assert ov_copying_scores(full_ov_circuits(identity_ov_model(sign=-1.0))).item() == 0.0


def test_full_ov_circuit_matches_seed_formula():
    model = hooked(n_layers=2, n_heads=2, d_head=8)
    full_ov = full_ov_circuits(model)
    torch.testing.assert_close(full_ov[1, 1], model.W_E @ model.OV[1, 1].AB @ model.W_U)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_eigenvalue_scores_of_plus_and_minus_identity(sign):
    model = identity_ov_model(sign)
    assert eigenvalue_scores(model.OV).item() == pytest.approx(sign)
    assert eigenvalue_scores(model.QK).item() == pytest.approx(sign)


def test_eigenvalue_score_of_a_rotation_is_zero():
    model = identity_ov_model()
    with torch.no_grad():
        model.blocks[0].attn.W_O[0] = torch.eye(16).roll(1, dims=0)  # a cyclic permutation: eigenvalues are roots of unity
    assert eigenvalue_scores(model.OV).item() == pytest.approx(0.0, abs=1e-5)


def test_composition_scores_match_seed_formula_and_only_look_forward():
    model = hooked(n_layers=3, n_heads=2, d_head=8)
    scores = composition_scores(model)
    assert set(scores) == {"q", "k", "v"} and all(s.shape == (6, 6) for s in scores.values())
    writer, reader = model.OV[0, 1].AB, {"q": model.QK[2, 0].AB, "k": model.QK[2, 0].AB.T, "v": model.OV[2, 0].AB}
    for mode, matrix in reader.items():
        expected = (writer @ matrix).norm() / (writer.norm() * matrix.norm())
        assert scores[mode][1, 4].item() == pytest.approx(expected.item(), rel=1e-4)  # L0H1 -> L2H0
        assert (scores[mode][2:4, :4] == 0).all() and (scores[mode][:, :2] == 0).all()  # no reader at or before its writer


def brute_force_attribution(model, cache, targets, first):
    """Σ over heads of (attn_out - b_O) · (correct - mean unembed direction), layer by layer."""
    per_layer = []
    for layer in range(model.cfg.n_layers):
        out = cache["attn_out", layer][:, first:] - model.b_O[layer]
        if targets.is_floating_point():
            value = torch.einsum("bpd,dv,bpv->", out, model.W_U, targets)
        else:
            logits = out @ model.W_U
            value = (logits.gather(-1, targets[..., None])[..., 0] - logits.mean(-1)).sum()
        per_layer.append(value / out.shape[0])
    return torch.stack(per_layer)


def test_token_direct_attribution_sums_to_attention_output_effect():
    module = BosIntsModule(n_ctx=8, d_vocab=20, n_heads=2, d_model=16, d_head=8)
    with torch.no_grad():
        for block in module.model.blocks:
            block.attn.b_O.normal_()  # a bias belongs to no head: attribution must leave it out
    tokens = torch.randint(0, 20, (6, 8))
    _, cache = module.model.run_with_cache(tokens)
    targets = module.targets(tokens)
    attribution = direct_attribution(module.model, cache, targets, first_target_pos=1)
    assert attribution.shape == (2, 2, 7)
    torch.testing.assert_close(attribution.sum((1, 2)), brute_force_attribution(module.model, cache, targets, 1), rtol=1e-4, atol=1e-5)


def test_vector_direct_attribution_projects_on_target_vector():
    module = AffineRecurrenceModule(n_ctx=6, d_vocab=5, first_target_pos=2, n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, normalization_type=None)
    vectors = torch.randn(4, 7, 5)
    _, cache = module.model.run_with_cache(module.model_input(vectors))
    targets = module.targets(vectors)
    attribution = direct_attribution(module.model, cache, targets, first_target_pos=2)
    assert attribution.shape == (2, 2, 4)
    torch.testing.assert_close(attribution.sum((1, 2)), brute_force_attribution(module.model, cache, targets, 2), rtol=1e-4, atol=1e-5)


def test_direct_attribution_divides_by_final_layer_norm_scale():
    module = BosIntsModule(n_ctx=8, d_vocab=20, n_heads=1, d_model=16, d_head=16, normalization_type="LNPre")
    tokens = torch.randint(0, 20, (6, 8))
    _, cache = module.model.run_with_cache(tokens)
    attribution = direct_attribution(module.model, cache, module.targets(tokens), first_target_pos=1)
    # LNPre: logits are centred residual / scale @ W_U, so each head's share is its centred output over the same scale.
    out = cache["attn_out", 0][:, 1:] - module.model.b_O[0]
    out = (out - out.mean(-1, keepdim=True)) / cache["ln_final.hook_scale"][:, 1:]
    logits = out @ module.model.W_U
    expected = (logits.gather(-1, module.targets(tokens)[..., None])[..., 0] - logits.mean(-1)).mean(0)
    torch.testing.assert_close(attribution[0, 0], expected, rtol=1e-4, atol=1e-5)
