"""Attention-score term importance: the four terms sum to the real scores, and removing one moves the loss."""

from __future__ import annotations

import pytest
import torch

from lit_interp.analysis.losses import task_loss
from lit_interp.analysis.term_importance import TERMS, attention_score_terms, supports_term_importance, term_importance
from lit_interp.tasks.base import Stream
from lit_interp.tasks.bos_ints import BosIntsModule

from .conftest import hooked, seed_001_score_terms, tiny_task


def with_random_biases(model):
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".b_" in name:
                parameter.normal_()
    return model


@pytest.mark.parametrize(
    "config",
    [
        dict(n_layers=2),
        dict(n_layers=3, n_heads=2, d_head=8),
        dict(n_layers=2, n_heads=2, d_head=8, positional_embedding_type="rotary", rotary_dim=8),
    ],
)
def test_terms_sum_to_real_scores(config):
    model = with_random_biases(hooked(**config))
    tokens = torch.randint(0, 16, (4, 8))
    _, cache = model.run_with_cache(tokens)
    for layer in range(1, model.cfg.n_layers):
        terms = attention_score_terms(model, cache, layer)
        assert list(terms) == list(TERMS)
        causal = torch.ones(8, 8, dtype=torch.bool).tril()
        torch.testing.assert_close(
            sum(terms.values())[..., causal], cache["attn_scores", layer][..., causal], rtol=1e-4, atol=1e-4
        )


@pytest.mark.parametrize("biases", [False, True])
def test_seed_001_split_sums_to_the_scores_only_without_biases_and_ours_equals_it_there(biases):
    _, data = tiny_task("bos_ints_attn_only")
    module = BosIntsModule(d_model=16, d_head=16, biases=biases)
    with torch.no_grad():
        for parameter in module.model.parameters():
            if parameter.requires_grad:
                parameter.normal_(std=0.3)  # every trainable weight, and the biases when there are any
    _, cache = module.model.run_with_cache(data.make_batch(Stream.PROBE, 0, 8))
    seed = seed_001_score_terms(module.model, cache)
    causal = torch.ones(10, 10, dtype=torch.bool).tril()
    error = (sum(seed.values()) - cache["attn_scores", 1])[..., causal].abs().max().item()
    ours = attention_score_terms(module.model, cache, 1)  # raises unless its terms sum to the scores
    if biases:
        assert error > 0.1, "with biases the seed's split misses the scores: why ours puts them in the direct term"
    else:
        assert error < 1e-3  # the seed's own check (atol 1e-3)
        for name in TERMS:
            torch.testing.assert_close(ours[name][..., causal], seed[name][..., causal], rtol=1e-4, atol=1e-4)


def test_layer_zero_has_only_the_direct_term():
    model = with_random_biases(hooked(n_layers=2))
    _, cache = model.run_with_cache(torch.randint(0, 16, (2, 8)))
    terms = attention_score_terms(model, cache, 0)
    assert all((terms[name] == 0).all() for name in ("k_comp", "q_comp", "kq_comp"))


def test_mismatched_scores_raise_with_the_error():
    model = hooked(n_layers=2)
    _, cache = model.run_with_cache(torch.randint(0, 16, (2, 8)))
    cache.cache_dict["blocks.1.attn.hook_attn_scores"] = cache["attn_scores", 1] + 0.5
    with pytest.raises(RuntimeError, match="miss the real scores by up to 0.5"):
        attention_score_terms(model, cache, 1)


def test_removing_every_term_at_once_equals_zero_scores_and_each_term_moves_the_loss():
    module, data = tiny_task("bos_ints_attn_only")
    with_random_biases(module.model)
    batch = data.make_batch(Stream.PROBE, 0, 8)
    _, cache = module.model.run_with_cache(batch)
    losses, mean_terms = term_importance(module.model, module, batch, cache, layer=1)
    assert list(losses) == list(TERMS) and all(term.shape == (1, 10, 10) for term in mean_terms.values())
    assert all((term.triu(1) == 0).all() for term in mean_terms.values())
    clean = task_loss(module.model, module, batch)
    assert all(loss != pytest.approx(clean, rel=1e-6) for loss in losses.values())
    # Removing all four leaves scores of 0: uniform causal attention in layer 1.
    terms = attention_score_terms(module.model, cache, 1)

    def uniform(scores, hook):
        return module.model.blocks[1].attn.apply_causal_mask(torch.zeros_like(scores))

    def remove_all(scores, hook):
        return module.model.blocks[1].attn.apply_causal_mask(scores - sum(terms.values()))

    assert task_loss(module.model, module, batch, [("blocks.1.attn.hook_attn_scores", remove_all)]) == pytest.approx(
        task_loss(module.model, module, batch, [("blocks.1.attn.hook_attn_scores", uniform)]), rel=1e-4
    )


def test_only_attention_only_unnormalised_multilayer_models_qualify():
    assert supports_term_importance(hooked(n_layers=2))
    assert not supports_term_importance(hooked(n_layers=1))
    assert not supports_term_importance(hooked(n_layers=2, normalization_type="LN"))
    assert not supports_term_importance(hooked(n_layers=2, attn_only=False, d_mlp=32))
    assert not supports_term_importance(BosIntsModule(d_model=16, d_head=16, attn_only=False, d_mlp=32).model)


def one_term_model(query_reads: str, key_reads: str):
    """2 layers, 1 head each: embeddings in dims 0-7, layer 0 writes dims 8-15; layer 1's query and key each read
    only one of the two subspaces ("direct" or "composed"), so one of its four score terms is non-zero."""
    model = hooked(n_layers=2)
    direct = torch.diag(torch.cat([torch.ones(8), torch.zeros(8)]))
    subspace = {"direct": direct, "composed": torch.eye(16) - direct}
    with torch.no_grad():
        model.embed.W_E[:] = torch.randn(16, 16) @ direct
        model.pos_embed.W_pos.zero_()
        layer0, layer1 = model.blocks[0].attn, model.blocks[1].attn
        layer0.W_V[0] = torch.eye(16)
        layer0.W_O[0] = torch.eye(16).roll(8, dims=1)  # dims 0-7 of the value land in dims 8-15
        layer1.W_Q[0] = 3 * subspace[query_reads] @ torch.randn(16, 16)
        layer1.W_K[0] = 3 * subspace[key_reads] @ torch.randn(16, 16)
    return model


class PreviousToken:
    """The previous-token task on raw tokens, without a Lightning module."""

    hparams = type("hparams", (), {"first_target_pos": 1})

    def model_input(self, tokens):
        return tokens

    def targets(self, tokens):
        return tokens[:, :-1]

    def loss(self, logits, tokens):
        return torch.nn.functional.cross_entropy(logits[:, 1:].flatten(0, 1), tokens[:, :-1].flatten())


@pytest.mark.parametrize(
    "query_reads, key_reads, term",
    [
        ("direct", "direct", "direct"),
        ("direct", "composed", "k_comp"),
        ("composed", "direct", "q_comp"),
        ("composed", "composed", "kq_comp"),
    ],
)
def test_term_importance_names_the_only_non_zero_term(query_reads, key_reads, term):
    model = one_term_model(query_reads, key_reads)
    tokens = torch.randint(0, 16, (8, 8))
    _, cache = model.run_with_cache(tokens)
    terms = attention_score_terms(model, cache, 1)
    assert {name for name, values in terms.items() if values.abs().max() > 1e-4} == {term}
    task = PreviousToken()
    losses, _ = term_importance(model, task, tokens, cache, layer=1)
    clean = task_loss(model, task, tokens)
    assert {name for name, loss in losses.items() if abs(loss - clean) > 1e-5} == {term}
