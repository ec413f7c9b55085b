"""Modular addition: the fixed train/test split as data, full-batch training batches, the loss at `=`, resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_fit

from lit_interp.errors import ConfigError
from lit_interp.rebuild import rebuild
from lit_interp.tasks.base import Stream
from lit_interp.tasks.modular_addition import ModularAdditionDataModule, ModularAdditionModule, pair_tokens


def test_the_split_is_a_disjoint_cover_of_all_pairs_fixed_by_the_seed():
    data = ModularAdditionDataModule(p=11, train_fraction=0.3, seed=4)
    train, test = data.train_pairs, data.test_pairs
    assert len(train) == round(0.3 * 121) and len(train) + len(test) == 121
    assert sorted(torch.cat([train, test]).tolist()) == list(range(121))
    again = ModularAdditionDataModule(p=11, train_fraction=0.3, seed=4)
    assert torch.equal(again.train_pairs, train) and torch.equal(again.test_pairs, test)
    assert not torch.equal(ModularAdditionDataModule(p=11, train_fraction=0.3, seed=5).train_pairs, train)


def test_every_training_step_is_the_whole_training_split_on_every_rank():
    data = ModularAdditionDataModule(p=7, train_fraction=0.5)
    expected = pair_tokens(data.train_pairs, 7)
    for index, rank in ((0, 0), (9, 0), (3, 1)):
        assert torch.equal(data.make_batch(Stream.TRAIN, index, data.batch_size, rank=rank), expected)
    assert data.batch_size == len(data.train_pairs)
    tokens = expected
    assert (tokens[:, 2] == 7).all() and torch.equal(tokens[:, 0] * 7 + tokens[:, 1], data.train_pairs)


@pytest.mark.parametrize("stream", [Stream.VAL, Stream.TEST])
def test_validation_and_test_are_the_held_out_pairs_each_once(stream):
    data = ModularAdditionDataModule(p=11, train_fraction=0.3, val_batch_size=16)
    assert data.val_batches == math.ceil(len(data.test_pairs) / 16)
    chunks = [data.make_batch(stream, index, data.val_batch_size) for index in range(data.val_batches)]
    assert torch.equal(torch.cat(chunks), pair_tokens(data.test_pairs, 11))


def test_probe_pairs_are_drawn_from_all_pairs_without_touching_the_global_rng():
    data = ModularAdditionDataModule(p=11)
    state = torch.get_rng_state()
    probe = data.make_batch(Stream.PROBE, 0, 500)
    assert torch.equal(state, torch.get_rng_state())
    assert probe.shape == (500, 3) and (probe[:, 2] == 11).all() and probe[:, :2].max() == 10
    train = set(data.train_pairs.tolist())
    drawn = (probe[:, 0] * 11 + probe[:, 1]).tolist()
    assert any(pair in train for pair in drawn) and not all(pair in train for pair in drawn)
    assert torch.equal(probe, ModularAdditionDataModule(p=11).make_batch(Stream.PROBE, 0, 500))


def test_the_checkpointed_split_is_restored_and_a_mismatched_one_is_refused():
    stored = ModularAdditionDataModule(p=11, seed=1).state_dict()
    data = ModularAdditionDataModule(p=11, seed=2)
    data.load_state_dict(stored)
    assert torch.equal(data.train_pairs, stored["train_pairs"]) and torch.equal(data.test_pairs, stored["test_pairs"])
    with pytest.raises(ConfigError, match="resume with the run's own data settings"):
        ModularAdditionDataModule(p=13, seed=1).load_state_dict(stored)


def test_the_loss_reads_the_answer_at_the_equals_position_only():
    module = ModularAdditionModule(d_vocab=12, d_model=16, n_heads=2, d_head=8, d_mlp=32)
    tokens = pair_tokens(torch.arange(121), 11)
    assert torch.equal(module.targets(tokens)[:, 0], (tokens[:, 0] + tokens[:, 1]) % 11)
    perfect = torch.full((121, 3, 11), -30.0)
    perfect[:, 2].scatter_(-1, module.targets(tokens), 30.0)  # positions 0 and 1 left at uniform: not scored
    perfect[:, :2] = torch.randn(121, 2, 11)
    assert module.loss(perfect, tokens) < 1e-20
    logits = torch.randn(121, 3, 11)
    assert module.loss(logits, tokens).item() == pytest.approx(
        F.cross_entropy(logits[:, 2].double(), module.targets(tokens)[:, 0]).item(), rel=1e-12
    )


def test_the_model_is_the_papers_shape_with_biases_frozen_at_zero():
    module = ModularAdditionModule()
    cfg = module.model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp) == (1, 128, 4, 32, 512)
    assert (cfg.d_vocab, cfg.d_vocab_out, cfg.n_ctx, cfg.act_fn, cfg.normalization_type) == (114, 113, 3, "relu", None)
    biases = {name: p for name, p in module.model.named_parameters() if name.split(".")[-1].startswith("b_")}
    assert biases and all(not p.requires_grad and not p.any() for p in biases.values())
    optimizer = module.configure_optimizers()["optimizer"]
    assert sum(p.numel() for group in optimizer.param_groups for p in group["params"]) == sum(
        p.numel() for p in module.parameters() if p.requires_grad
    )
    assert all(p.requires_grad for p in ModularAdditionModule(biases=True, d_model=16, d_head=4).parameters())


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: ModularAdditionDataModule(p=10), "p=10 must be odd"),
        (lambda: ModularAdditionDataModule(p=1), "p=1 must be odd and >= 3"),
        (lambda: ModularAdditionDataModule(train_fraction=1.0), r"train_fraction=1.0 must lie in \(0, 1\)"),
        (lambda: ModularAdditionDataModule(p=3, train_fraction=0.01), "leaves 0 for training"),
        (lambda: ModularAdditionDataModule(val_batch_size=0), "val_batch_size=0"),
        (lambda: ModularAdditionModule(n_ctx=4), "n_ctx=4"),
        (lambda: ModularAdditionModule(first_target_pos=1), "first_target_pos=1"),
    ],
)
def test_bad_values_name_the_value(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_a_resumed_run_and_a_rebuilt_datamodule_hold_the_runs_split():
    args = ["--trainer.val_check_interval=3", "--checkpoint.every_n_train_steps=3", "--data.init_args.seed=7"]
    tiny_fit("modular_addition_cpu", "--trainer.max_steps=3", *args)
    tiny_fit("modular_addition_cpu", "--trainer.max_steps=6", "--ckpt_path", "last", *args)
    checkpoints = Path("lightning_logs/version_0/checkpoints")
    first = torch.load(checkpoints / "step_0000003.ckpt", weights_only=False)["ModularAdditionDataModule"]
    last = torch.load(checkpoints / "last.ckpt", weights_only=False)
    resumed = last["ModularAdditionDataModule"]
    assert last["global_step"] == 6 and resumed["next_train_index"] == 6
    assert torch.equal(resumed["train_pairs"], first["train_pairs"])
    _, rebuilt = rebuild(last, checkpoints / "last.ckpt")
    assert torch.equal(rebuilt.train_pairs, first["train_pairs"])
    assert torch.equal(rebuilt.test_pairs, first["test_pairs"])
    assert rebuilt.p == last["hyper_parameters"]["d_vocab"] - 1 == 23
    assert len(rebuilt.train_pairs) == round(0.4 * 23**2)
