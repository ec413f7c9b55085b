"""Rotary similarity matrices: a position-independent pre-rotary q is all ones, its rotation is not."""

from __future__ import annotations

import torch

from lit_interp.analysis.rotary import mean_off_diagonal, rotary_similarities

from .conftest import hooked


def test_same_query_everywhere_is_all_ones_before_rotation_only():
    model = hooked(n_layers=1, d_head=8, n_heads=2, positional_embedding_type="rotary", rotary_dim=8)
    with torch.no_grad():
        model.embed.W_E[:] = torch.randn(16)  # every token embeds the same: q and k cannot depend on the token
    _, cache = model.run_with_cache(torch.randint(0, 16, (3, 8)))
    similarities = rotary_similarities(cache, n_layers=1)
    assert set(similarities) == {"q", "rot_q", "k", "rot_k", "q_vs_k"}
    assert all(similarity.shape == (1, 2, 8, 8) for similarity in similarities.values())
    torch.testing.assert_close(similarities["q"], torch.ones(1, 2, 8, 8))
    torch.testing.assert_close(mean_off_diagonal(similarities["k"]), torch.ones(1, 2))
    assert (mean_off_diagonal(similarities["rot_q"]) < 0.9).all()
    torch.testing.assert_close(similarities["rot_q"].diagonal(dim1=-2, dim2=-1), torch.ones(1, 2, 8))


def test_query_against_key_is_not_symmetric():
    model = hooked(n_layers=1, d_head=8, positional_embedding_type="rotary", rotary_dim=8)
    _, cache = model.run_with_cache(torch.randint(0, 16, (3, 8)))
    q_vs_k = rotary_similarities(cache, n_layers=1)["q_vs_k"][0, 0]
    assert not torch.allclose(q_vs_k, q_vs_k.T)
