"""Direct attribution, logit lens and backup heads against the model's own outputs."""

from __future__ import annotations

import pytest
import torch

from lit_interp.analysis.attribution import (
    backup_heads,
    component_direct_attribution,
    direct_attribution,
    logit_lens,
    stack_head_results,
)
from lit_interp.analysis.weights import processed_copy
from lit_interp.tasks.affine_recurrence import AffineRecurrenceModule
from lit_interp.tasks.bos_ints import BosIntsModule


def perturbed(module, scale_ln: bool = True):
    """Random biases everywhere and LayerNorm scales far from 1, so a forgotten bias or ln weight shows."""
    with torch.no_grad():
        for name, parameter in module.model.named_parameters():
            if name.endswith(".w") and scale_ln:
                parameter.copy_(torch.rand_like(parameter) * 3 + 0.2)
            elif ".b" in name:
                parameter.normal_()
    return module


def token_module(**config):
    defaults = dict(
        n_ctx=8,
        d_vocab=20,
        n_heads=2,
        d_model=16,
        d_head=8,
        attn_only=False,
        d_mlp=32,
        normalization_type="LN",
        positional_embeddings=True,
    )
    return perturbed(BosIntsModule(**{**defaults, **config}))


def vector_module():
    return perturbed(
        AffineRecurrenceModule(
            n_ctx=6, d_vocab=5, first_target_pos=2, n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32
        )
    )


def test_token_components_sum_to_the_logit_difference_less_biases():
    module = token_module()
    tokens = torch.randint(0, 20, (6, 8))
    logits, cache = module.model.run_with_cache(tokens)
    processed = processed_copy(module.model, center_unembed=True)
    targets = module.targets(tokens)
    attribution, labels = component_direct_attribution(cache, processed.W_U, targets, first_target_pos=1)
    assert labels == ["embed", "pos_embed", "mlp0", "mlp1", "L0H0", "L0H1", "L1H0", "L1H1", "attn_bias"]
    logits, b_U = logits[:, 1:], processed.b_U
    difference = logits.gather(-1, targets[..., None])[..., 0] - logits.mean(-1) - (b_U[targets] - b_U.mean())
    torch.testing.assert_close(attribution.sum(0), difference.mean(0), rtol=1e-4, atol=1e-4)
    heads = direct_attribution(cache, processed.W_U, targets, first_target_pos=1)
    torch.testing.assert_close(heads.flatten(0, 1), attribution[4:8], rtol=1e-5, atol=1e-6)


def test_vector_components_sum_to_the_output_projection_less_biases():
    module = vector_module()
    vectors = torch.randn(4, 7, 5)
    output, cache = module.model.run_with_cache(module.model_input(vectors))
    processed = processed_copy(module.model, center_unembed=False)
    targets = module.targets(vectors)
    attribution, _ = component_direct_attribution(cache, processed.W_U, targets, first_target_pos=2)
    expected = ((output[:, 2:] - processed.b_U) * targets).sum(-1).mean(0)
    torch.testing.assert_close(attribution.sum(0), expected, rtol=1e-4, atol=1e-4)


def test_head_attribution_without_norm_is_its_output_through_the_unembedding():
    module = perturbed(BosIntsModule(n_ctx=8, d_vocab=20, n_heads=2, d_model=16, d_head=8), scale_ln=False)
    tokens = torch.randint(0, 20, (6, 8))
    _, cache = module.model.run_with_cache(tokens)
    targets = module.targets(tokens)
    attribution = direct_attribution(cache, module.model.W_U, targets, first_target_pos=1)
    assert attribution.shape == (2, 2, 7)
    z, W_O = cache["z", 1][:, 1:, 0], module.model.W_O[1, 0]
    logits = z @ W_O @ module.model.W_U
    expected = (logits.gather(-1, targets[..., None])[..., 0] - logits.mean(-1)).mean(0)
    torch.testing.assert_close(attribution[1, 0], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["token", "vector"])
def test_logit_lens_at_the_last_layer_is_the_model_itself(kind):
    module = token_module() if kind == "token" else vector_module()
    batch = torch.randint(0, 20, (6, 8)) if kind == "token" else torch.randn(4, 7, 5)
    output, cache = module.model.run_with_cache(module.model_input(batch))
    lens = logit_lens(module.model, module, batch, cache)
    assert len(lens["loss"]) == module.model.cfg.n_layers + 1
    assert lens["loss"][-1] == pytest.approx(module.loss(output, batch).item(), rel=1e-5)
    # Entry 0 reads the embeddings alone: ln_final and the unembedding applied to resid_pre 0 by hand.
    first = module.model.unembed(module.model.ln_final(cache["resid_pre", 0]))
    assert lens["loss"][0] == pytest.approx(module.loss(first, batch).item(), rel=1e-5)
    if kind == "token":
        first_target = module.hparams.first_target_pos
        accuracy = (output[:, first_target:].argmax(-1) == module.targets(batch)).float().mean().item()
        assert lens["acc"][-1] == pytest.approx(accuracy)
    else:
        assert "acc" not in lens


def test_backup_heads_in_one_attention_layer_without_norm_change_nothing_else():
    module = perturbed(BosIntsModule(n_ctx=8, d_vocab=20, n_layers=1, n_heads=3, d_model=16, d_head=8), scale_ln=False)
    tokens = torch.randint(0, 20, (6, 8))
    _, cache = module.model.run_with_cache(tokens)
    clean = direct_attribution(cache, module.model.W_U, module.targets(tokens), 1).mean(-1)
    (layer, head), change, loss = backup_heads(module.model, module, tokens, module.model.W_U, clean)
    assert (layer, head) == divmod(int(clean.argmax()), 3)
    # No later layer and no norm: the others' direct effects cannot move; the ablated head's falls to zero.
    expected = torch.zeros(1, 3)
    expected[layer, head] = -clean[layer, head]
    torch.testing.assert_close(change, expected, rtol=1e-4, atol=1e-5)
    assert loss != pytest.approx(module.loss(module.model(tokens), tokens).item(), rel=1e-6)
    assert all(not hook_point.fwd_hooks for hook_point in module.model.hook_dict.values())


def test_our_head_stack_equals_transformer_lens():
    module = token_module()
    _, cache = module.model.run_with_cache(torch.randint(0, 20, (6, 8)))
    ours = stack_head_results(cache, first_pos=2)
    theirs, labels = cache.stack_head_results(layer=-1, pos_slice=slice(2, None), return_labels=True)
    assert labels == module.model.all_head_labels()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
