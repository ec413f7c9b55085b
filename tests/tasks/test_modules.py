"""Task modules: the HookedTransformer they own, their losses, and their optimizer recipe."""

from __future__ import annotations

import math

import pytest
import torch
from transformer_lens import HookedTransformer

from lit_interp.errors import ConfigError
from lit_interp.tasks.affine_recurrence import AffineRecurrenceDataModule, AffineRecurrenceModule
from lit_interp.tasks.base import Stream
from lit_interp.tasks.bos_ints import BosIntsDataModule, BosIntsModule
from lit_interp.tasks.induction import InductionDataModule, InductionModule
from lit_interp.tasks.prev_token_digits import DigitsDataModule, PrevTokenDigitsModule


def tiny_digits():
    return PrevTokenDigitsModule(d_model=16), DigitsDataModule()


def tiny_bos_mlp():
    data = BosIntsDataModule(n_ctx=12, d_vocab=30, bos_token=0)
    module = BosIntsModule(
        n_ctx=12, d_vocab=30, d_model=16, d_head=16, attn_only=False, d_mlp=32, normalization_type="LN"
    )
    return module, data


def tiny_recurrence():
    data = AffineRecurrenceDataModule(vector_dim=8, seq_len=10, order=2)
    module = AffineRecurrenceModule(
        n_ctx=9, d_vocab=8, first_target_pos=4, n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32
    )
    return module, data


def tiny_induction():
    data = InductionDataModule(n_ctx=16, d_vocab=16, max_noise_len=4)
    return InductionModule(n_ctx=16, d_vocab=16, d_model=16, n_heads=2, d_head=8), data


@pytest.mark.parametrize("build", [tiny_digits, tiny_bos_mlp, tiny_recurrence, tiny_induction])
def test_module_exposes_a_hooked_transformer_and_a_trainable_loss(build):
    module, data = build()
    assert isinstance(module.model, HookedTransformer)
    batch = data.make_batch(Stream.TRAIN, 0, 8)
    loss = module.loss(module(batch), batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert module.model.W_E.grad is not None and module.model.W_E.grad.abs().sum() > 0
    _, cache = module.model.run_with_cache(module.model_input(batch))
    assert cache["blocks.0.attn.hook_pattern"].shape == (8, module.model.cfg.n_heads, data.n_ctx, data.n_ctx)


def test_previous_token_loss_scores_only_positions_with_a_previous_token():
    module, data = tiny_digits()
    tokens = data.make_batch(Stream.TRAIN, 0, 4)
    perfect = torch.full((4, data.n_ctx, 10), -30.0)
    perfect[:, 1:].scatter_(-1, tokens[:, :-1, None], 30.0)  # position 0 is left wrong on purpose
    assert module.loss(perfect, tokens) < 1e-6


def test_induction_loss_scores_the_next_token_at_every_position():
    module, data = tiny_induction()
    tokens = data.make_batch(Stream.TRAIN, 0, 4)
    assert module.model_input(tokens).shape == (4, 16) and module.targets(tokens).shape == (4, 16)
    perfect = torch.full((4, 16, 16), -30.0)
    perfect.scatter_(-1, tokens[:, 1:, None], 30.0)
    assert module.loss(perfect, tokens) < 1e-6
    perfect[:, 0] = 0.0  # BOS predicting the first token is scored too: uniform there costs log(16) / 16
    assert module.loss(perfect, tokens).item() == pytest.approx(math.log(16) / 16, rel=1e-4)


def test_induction_model_is_attention_only_with_learned_positions():
    module, _ = tiny_induction()
    cfg = module.model.cfg
    assert cfg.attn_only and cfg.positional_embedding_type == "standard" and cfg.n_layers == 2
    assert module.model.W_pos.requires_grad and module.model.W_pos.abs().sum() > 0


def test_recurrence_loss_starts_at_twice_the_order():
    module, data = tiny_recurrence()
    vectors = data.make_batch(Stream.TRAIN, 0, 4)
    output = torch.zeros(4, data.n_ctx, data.d_vocab)
    output[:, 4:] = vectors[:, 5:]
    assert module.loss(output, vectors) == 0
    output[:, 3] = 100.0  # before 2 * order: not scored
    assert module.loss(output, vectors) == 0


def test_recurrence_model_reads_vectors_through_w_e():
    module, data = tiny_recurrence()
    vectors = data.make_batch(Stream.TRAIN, 0, 2)
    _, cache = module.model.run_with_cache(module.model_input(vectors))
    expected = module.model_input(vectors) @ module.model.W_E
    assert torch.allclose(cache["hook_embed"], expected, atol=1e-6)
    assert module(vectors).shape == (2, data.n_ctx, data.d_vocab)


def test_positional_embeddings_are_zero_and_stay_out_of_the_optimizer():
    module, _ = tiny_bos_mlp()
    assert module.model.W_pos.abs().sum() == 0 and not module.model.W_pos.requires_grad
    optimizer = module.configure_optimizers()["optimizer"]
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(module.model.W_pos) not in optimized


@pytest.mark.parametrize("attn_only", [True, False])
def test_bias_free_models_keep_every_bias_zero_and_out_of_the_optimizer(attn_only):
    sizes = dict(d_model=16, d_head=16) | (
        {} if attn_only else dict(attn_only=False, d_mlp=32, normalization_type="LN")
    )
    module, data = BosIntsModule(biases=False, weight_decay=0.1, **sizes), BosIntsDataModule()
    biases = {name: p for name, p in module.model.named_parameters() if name.rsplit(".", 1)[-1].startswith("b")}
    expected = {"b_Q", "b_K", "b_V", "b_O", "b_U"} | (set() if attn_only else {"b_in", "b_out", "b"})
    assert {name.rsplit(".", 1)[-1] for name in biases} == expected
    assert all(p.abs().sum() == 0 and not p.requires_grad for p in biases.values())
    optimizer = module.configure_optimizers()["optimizer"]
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in biases.values()} and id(module.model.W_E) in optimized
    for step in range(3):
        batch = data.make_batch(Stream.TRAIN, step, 8)
        module.loss(module(batch), batch).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(p.abs().sum() == 0 for p in biases.values()), "a step with weight decay moved a frozen bias"
    assert module.model.W_E.requires_grad and module.model.blocks[0].attn.W_Q.requires_grad


def test_models_train_their_biases_by_default():
    module = BosIntsModule(d_model=16, d_head=16)
    assert all(p.requires_grad for name, p in module.model.named_parameters() if ".b_" in name)


def test_warmup_rises_linearly_then_holds():
    module = BosIntsModule(d_model=16, d_head=16, lr=1e-3, warmup_steps=4)
    config = module.configure_optimizers()
    optimizer, schedule = config["optimizer"], config["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_cosine_decay_follows_warmup_and_holds_at_its_floor():
    module = BosIntsModule(d_model=16, d_head=16, lr=1e-3, warmup_steps=2, decay_steps=6, min_lr_ratio=0.1)
    config = module.configure_optimizers()
    optimizer, schedule = config["optimizer"], config["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(8):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    # warmup 5e-4, 1e-3; steps 2..6: 1e-4 + 9e-4 * (1 + cos(pi * k / 4)) / 2 for k = 0..4; then the floor
    cosine = [1e-4 + 9e-4 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(5)]
    assert rates == pytest.approx([5e-4, 1e-3, *cosine, 1e-4])
    assert cosine[0] == pytest.approx(1e-3) and cosine[-1] == pytest.approx(1e-4)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: BosIntsModule(warmup_steps=10, decay_steps=5), "decay_steps=5"),
        (lambda: BosIntsModule(min_lr_ratio=1.5), "min_lr_ratio=1.5"),
        (lambda: PrevTokenDigitsModule(lr=0.0), "lr=0.0"),
        (lambda: PrevTokenDigitsModule(n_ctx=1), "n_ctx=1"),
        (lambda: BosIntsModule(warmup_steps=-1), "warmup_steps=-1"),
        (lambda: BosIntsModule(betas=(0.9, 1.5)), "betas"),
        (lambda: BosIntsModule(attn_only=False, d_mlp=None), "d_mlp=None"),
        (lambda: BosIntsModule(d_model=16, d_head=16, n_heads=0), "n_heads"),
        (lambda: InductionModule(n_ctx=8, first_target_pos=8), "first_target_pos=8"),
    ],
)
def test_bad_model_values_name_the_value(build, message):
    with pytest.raises(ConfigError, match=message):
        build()
