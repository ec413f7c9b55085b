"""Weight-based circuits on the processed copy: known answers on hand-built heads, and LayerNorm folded in."""

from __future__ import annotations

import pytest
import torch

from lit_interp.analysis.circuits import (
    composition_scores,
    effective_rank,
    eigenvalue_scores,
    full_ov_circuits,
    full_ov_factored,
    full_qk_circuits,
    has_positional_embeddings,
    head_singular_values,
    kq_composition_circuits,
    ov_copying_scores,
    positional_qk_circuits,
)
from lit_interp.analysis.weights import processed_copy
from lit_interp.tasks.affine_recurrence import AffineRecurrenceModule

from .conftest import hooked


def identity_ov_model(sign: float = 1.0, **config):
    """W_E, W_V, W_U identities and W_O = sign * identity: the full OV circuit is sign * I."""
    model = hooked(**config)
    with torch.no_grad():
        model.embed.W_E[:] = torch.eye(16)
        model.unembed.W_U[:] = torch.eye(16)
        model.blocks[0].attn.W_V[0] = torch.eye(16)
        model.blocks[0].attn.W_O[0] = sign * torch.eye(16)
        model.blocks[0].attn.W_Q[0] = sign * torch.eye(16)
        model.blocks[0].attn.W_K[0] = torch.eye(16)
    return model


def test_identity_ov_circuit_copies_every_token():
    full_ov = full_ov_circuits(processed_copy(identity_ov_model(), center_unembed=True))
    assert full_ov.shape == (1, 1, 16, 16)
    torch.testing.assert_close(
        full_ov[0, 0], torch.eye(16) - 1 / 16
    )  # the centred unembedding takes the mean logit off
    assert ov_copying_scores(full_ov).item() == 1.0


def test_negated_ov_circuit_copies_nothing():
    assert (
        ov_copying_scores(full_ov_circuits(processed_copy(identity_ov_model(sign=-1.0), center_unembed=True))).item()
        == 0.0
    )


def test_full_ov_circuit_matches_seed_formula():
    model = hooked(n_layers=2, n_heads=2, d_head=8)
    full_ov = full_ov_circuits(model)
    torch.testing.assert_close(full_ov[1, 1], model.W_E @ model.OV[1, 1].AB @ model.W_U)


def layer_norm_model():
    """The identity-OV head behind LayerNorms whose scales are far from 1: ln1.w = 3, ln_final.w = 0.5 .. 2."""
    model = identity_ov_model(normalization_type="LN")
    with torch.no_grad():
        model.blocks[0].ln1.w.fill_(3.0)
        model.ln_final.w.copy_(torch.linspace(0.5, 2.0, 16))
        model.blocks[0].ln1.b.normal_()
        model.ln_final.b.normal_()
    return model


def test_layer_norm_scales_are_folded_into_the_circuits():
    model = layer_norm_model()
    processed = processed_copy(model, center_unembed=True)
    centre = torch.eye(16) - 1 / 16  # LN subtracts the mean: the folded weights read the centred residual
    expected_ov = centre @ (3.0 * torch.eye(16)) @ torch.diag(torch.linspace(0.5, 2.0, 16)) @ centre
    torch.testing.assert_close(full_ov_circuits(processed)[0, 0], expected_ov, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(
        full_ov_circuits(model)[0, 0], expected_ov, atol=0.1
    )  # the raw weights give another answer
    assert eigenvalue_scores(processed.OV).item() == pytest.approx(1.0, abs=1e-5)  # 3 * identity is still a copier
    assert ov_copying_scores(full_ov_circuits(processed)).item() == 1.0
    assert model.cfg.normalization_type == "LN" and model.blocks[0].ln1.w[0].item() == 3.0  # training weights untouched


@pytest.mark.parametrize("normalization_type", ["LN", "RMS", "LNPre", None])
def test_processed_copy_computes_the_same_log_probabilities(normalization_type):
    model = hooked(
        n_layers=2, attn_only=False, d_mlp=16, normalization_type=normalization_type
    )  # square: see _fold_norm_scales
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.add_(torch.randn_like(parameter) * (0.5 if ".w" in name else 0.1))
    tokens = torch.randint(0, 16, (3, 8))
    processed = processed_copy(model, center_unembed=True)
    torch.testing.assert_close(processed(tokens).log_softmax(-1), model(tokens).log_softmax(-1), rtol=1e-4, atol=1e-4)


def test_vector_model_keeps_its_output_only_with_the_unembedding_uncentred():
    module = AffineRecurrenceModule(
        n_ctx=6, d_vocab=5, first_target_pos=2, n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32
    )
    with torch.no_grad():
        for parameter in module.model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    vectors = torch.randn(4, 6, 5)
    processed = processed_copy(module.model, center_unembed=False)
    # The linear input map W_E is centred like any writing weight: exact, since every reader is an LN.
    torch.testing.assert_close(processed.W_E.mean(-1), torch.zeros(5), atol=1e-6, rtol=0)
    torch.testing.assert_close(processed(vectors), module.model(vectors), rtol=1e-4, atol=1e-5)
    centred = processed_copy(module.model, center_unembed=True)
    assert not torch.allclose(
        centred(vectors), module.model(vectors), atol=1e-3
    )  # why a regression head stays uncentred


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_eigenvalue_scores_of_plus_and_minus_identity(sign):
    model = identity_ov_model(sign)
    assert eigenvalue_scores(model.OV).item() == pytest.approx(sign)
    assert eigenvalue_scores(model.QK).item() == pytest.approx(sign)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_full_circuit_eigenvalue_score_of_a_copying_and_a_suppressing_head(sign):
    processed = processed_copy(identity_ov_model(sign), center_unembed=True)
    # W_E W_OV W_U = sign * (I - 1/16): fifteen eigenvalues of sign, one of 0
    assert eigenvalue_scores(full_ov_factored(processed)).item() == pytest.approx(sign, abs=1e-5)


def test_a_head_that_copies_tokens_scores_one_whatever_it_does_outside_the_embedding():
    """Tokens embedded in dims 0-7, where the head copies; it negates dims 8-15 three times over, which no
    token reaches: the residual-space score (seed 002's W_OV alone) reads -0.5, the full circuit +1."""
    model = hooked(d_vocab=8)
    with torch.no_grad():
        model.embed.W_E[:] = torch.eye(16)[:8]
        model.unembed.W_U[:] = torch.eye(16)[:, :8]
        model.blocks[0].attn.W_V[0] = torch.eye(16)
        model.blocks[0].attn.W_O[0] = torch.diag(torch.cat([torch.ones(8), -3 * torch.ones(8)]))
    assert eigenvalue_scores(model.OV).item() == pytest.approx(-0.5)
    assert eigenvalue_scores(full_ov_factored(model)).item() == pytest.approx(1.0)
    torch.testing.assert_close(full_ov_factored(model).AB, full_ov_circuits(model))


def test_full_circuit_eigenvalue_score_of_a_token_permutation_is_zero_and_of_nan_weights_nan():
    model = identity_ov_model()
    with torch.no_grad():
        model.blocks[0].attn.W_O[0] = torch.eye(16).roll(1, dims=0)  # each token's output is the next token
    assert eigenvalue_scores(full_ov_factored(model)).item() == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        model.unembed.W_U[0, 0] = float("nan")
    assert eigenvalue_scores(full_ov_factored(model)).isnan().all()


def test_full_circuit_eigenvalue_score_reads_the_ids_input_and_output_share():
    """An input vocabulary of 12 with an output vocabulary of 8 (extra input tokens, as an "=" token): the head
    copies ids 0-7 and maps the extra inputs onto the negated outputs, which the shared-id circuit leaves out."""
    model = hooked(d_vocab=12, d_vocab_out=8)
    with torch.no_grad():
        model.embed.W_E[:] = torch.eye(16)[:12]
        model.unembed.W_U[:] = torch.eye(16)[:, :8] - torch.cat([torch.zeros(8, 8), torch.eye(8)[:4].repeat(2, 1)])
        model.blocks[0].attn.W_V[0] = torch.eye(16)
        model.blocks[0].attn.W_O[0] = torch.eye(16)
    circuit = full_ov_factored(model)
    assert circuit.shape == (1, 1, 8, 8)
    torch.testing.assert_close(circuit.AB[0, 0], full_ov_circuits(model)[0, 0, :8])
    assert eigenvalue_scores(circuit).item() == pytest.approx(1.0, abs=1e-5)


def test_full_circuit_eigenvalue_score_of_a_vector_head_reads_input_to_output():
    """Vector inputs: W_E maps 5-dim inputs into d_model, W_U back; a head adding its attended input scores +1."""
    module = AffineRecurrenceModule(
        n_ctx=6, d_vocab=5, first_target_pos=2, n_layers=1, d_model=16, n_heads=1, d_head=16
    )
    model = module.model
    with torch.no_grad():
        model.embed.W_E[:] = torch.randn(5, 16)
        model.unembed.W_U[:] = torch.linalg.pinv(model.W_E)  # reads back the input vector
        model.blocks[0].attn.W_V[0] = 2 * torch.eye(16)
        model.blocks[0].attn.W_O[0] = torch.eye(16)
    assert eigenvalue_scores(full_ov_factored(model)).item() == pytest.approx(1.0, abs=1e-5)
    with torch.no_grad():
        model.blocks[0].attn.W_O[0] = -torch.eye(16)
    assert eigenvalue_scores(full_ov_factored(model)).item() == pytest.approx(-1.0, abs=1e-5)


def test_eigenvalue_score_of_a_rotation_is_zero():
    model = identity_ov_model()
    with torch.no_grad():
        model.blocks[0].attn.W_O[0] = torch.eye(16).roll(
            1, dims=0
        )  # a cyclic permutation: eigenvalues are roots of unity
    assert eigenvalue_scores(model.OV).item() == pytest.approx(0.0, abs=1e-5)


def test_singular_values_and_effective_rank():
    model = identity_ov_model()
    with torch.no_grad():
        model.blocks[0].attn.W_O[0] = torch.diag(torch.tensor([3.0, 1.0] + [0.0] * 14))
    singular = head_singular_values(model)
    torch.testing.assert_close(singular["ov"][0, 0, :3], torch.tensor([3.0, 1.0, 0.0]), atol=1e-5, rtol=0)
    assert effective_rank(singular["ov"]).item() == 2  # 9 of 10 is below 95% of the energy
    assert effective_rank(singular["ov"], energy=0.9).item() == 1
    assert effective_rank(singular["qk"]).item() == 16  # identity: all directions alike
    assert effective_rank(torch.zeros(1, 4)).item() == 0 and effective_rank(torch.full((1, 4), torch.nan)).isnan().all()


def test_composition_scores_match_transformer_lens_and_seed_formula():
    model = hooked(n_layers=3, n_heads=2, d_head=8)
    scores = composition_scores(model)
    for mode in "qkv":
        theirs = model.all_composition_scores(mode.upper()).reshape(6, 6)
        torch.testing.assert_close(scores[mode], theirs, rtol=1e-4, atol=1e-6)
    assert set(scores) == {"q", "k", "v"} and all(s.shape == (6, 6) for s in scores.values())
    writer, reader = model.OV[0, 1].AB, {"q": model.QK[2, 0].AB, "k": model.QK[2, 0].AB.T, "v": model.OV[2, 0].AB}
    for mode, matrix in reader.items():
        expected = (writer @ matrix).norm() / (writer.norm() * matrix.norm())
        assert scores[mode][1, 4].item() == pytest.approx(expected.item(), rel=1e-4)  # L0H1 -> L2H0
        assert (scores[mode][2:4, :4] == 0).all() and (
            scores[mode][:, :2] == 0
        ).all()  # no reader at or before its writer


def test_qk_circuits_match_seed_formulas():
    model = hooked(n_layers=2, n_heads=2, d_head=8)
    torch.testing.assert_close(full_qk_circuits(model)[1, 0], model.W_E @ model.QK[1, 0].AB @ model.W_E.T)
    torch.testing.assert_close(positional_qk_circuits(model)[0, 1], model.W_pos @ model.QK[0, 1].AB @ model.W_pos.T)
    kq = kq_composition_circuits(model)
    assert kq.shape == (2, 2, 16, 16)
    moved = model.W_E @ model.OV[0, 1].AB
    torch.testing.assert_close(kq[1, 0], moved @ model.QK[1, 0].AB @ moved.T, rtol=1e-4, atol=1e-4)
    assert has_positional_embeddings(model)
    with torch.no_grad():
        model.pos_embed.W_pos.zero_()
    assert not has_positional_embeddings(model)
