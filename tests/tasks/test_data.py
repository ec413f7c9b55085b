"""Synthetic data: shapes, value ranges, and batches as pure functions of (seed, rank, index)."""

from __future__ import annotations

import pytest
import torch

from lit_interp.errors import ConfigError
from lit_interp.tasks.affine_recurrence import AffineRecurrenceDataModule
from lit_interp.tasks.base import Stream
from lit_interp.tasks.bos_ints import BosIntsDataModule
from lit_interp.tasks.induction import InductionDataModule
from lit_interp.tasks.prev_token_digits import DigitsDataModule

DATAMODULES = [DigitsDataModule, BosIntsDataModule, AffineRecurrenceDataModule, InductionDataModule]


@pytest.mark.parametrize("datamodule_class", DATAMODULES)
def test_batches_are_a_pure_function_of_seed_rank_and_index(datamodule_class):
    data = datamodule_class(seed=3)
    again = datamodule_class(seed=3)
    batch = data.make_batch(Stream.TRAIN, 7, 8, rank=1)
    assert torch.equal(batch, again.make_batch(Stream.TRAIN, 7, 8, rank=1))
    assert not torch.equal(batch, data.make_batch(Stream.TRAIN, 7, 8, rank=0)), "DDP ranks must see different data"
    assert not torch.equal(batch, data.make_batch(Stream.TRAIN, 8, 8, rank=1)), "consecutive steps must differ"
    assert not torch.equal(batch, data.make_batch(Stream.VAL, 7, 8, rank=1)), "validation is seeded separately"
    assert not torch.equal(batch, datamodule_class(seed=4).make_batch(Stream.TRAIN, 7, 8, rank=1))


def test_generation_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    BosIntsDataModule().make_batch(Stream.TRAIN, 0, 16)
    assert torch.equal(state, torch.get_rng_state())


def test_digit_strings_use_the_ten_digits():
    tokens = DigitsDataModule(n_ctx=12).make_batch(Stream.TRAIN, 0, 512)
    assert tokens.shape == (512, 12) and tokens.dtype == torch.long
    assert set(tokens.unique().tolist()) == set(range(10))


@pytest.mark.parametrize("bos_token, d_vocab", [(100, 101), (0, 300)])
def test_bos_ints_start_with_bos_and_never_repeat_it(bos_token, d_vocab):
    tokens = BosIntsDataModule(n_ctx=50, d_vocab=d_vocab, bos_token=bos_token).make_batch(Stream.TRAIN, 0, 256)
    assert (tokens[:, 0] == bos_token).all()
    body = tokens[:, 1:]
    assert (body != bos_token).all()
    assert set(body.unique().tolist()) == set(range(d_vocab)) - {bos_token}


@pytest.mark.parametrize("order", [1, 2])
def test_recurrence_follows_its_rule_and_is_normalised(order):
    data = AffineRecurrenceDataModule(order=order, seq_len=14, coefficient_bounds=(-0.9, 0.9))
    vectors = data.make_batch(Stream.PROBE, 0, 64).double()
    assert vectors.shape == (64, 14, 40)
    norms = vectors.norm(dim=-1).amax(dim=1)
    assert ((norms >= 1 - 1e-5) & (norms <= 2 + 1e-5)).all(), "largest norm per sequence is the cap in (1, 2)"
    # Scaling a sequence by s keeps it a recurrence with the same c and constant s·d: solve for
    # (c_1..c_k, d) by least squares and check every term is reproduced exactly.
    for sequence in vectors[:4]:
        steps = range(order, 14)
        lagged = torch.stack(
            [torch.stack([sequence[j - k] for k in range(1, order + 1)], -1) for j in steps]
        )  # step d k
        system = torch.cat([lagged.reshape(-1, order), torch.eye(40, dtype=torch.double).repeat(len(steps), 1)], 1)
        targets = sequence[order:].reshape(-1, 1)
        solution = torch.linalg.lstsq(system, targets).solution
        assert torch.allclose(system @ solution, targets, atol=1e-6)
        assert (solution[:order].abs() <= 0.9 + 1e-6).all()


def split_repeats(sequence: list[int], prefix: int, n_ctx: int) -> tuple[int, int]:
    """(noise length k, segment length L) of `[prefix, noise, r, r, filler]`, found from the tokens: the smallest
    k whose segment (n_ctx + 1 - prefix - k) // 2 repeats right after itself."""
    for noise in range(n_ctx):
        length = (n_ctx + 1 - prefix - noise) // 2
        start = prefix + noise
        if length >= 2 and sequence[start : start + length] == sequence[start + length : start + 2 * length]:
            return noise, length
    raise AssertionError(f"no repeated segment in {sequence}")


@pytest.mark.parametrize("bos_token", [0, 63, None])
def test_induction_sequences_repeat_a_segment_after_some_noise(bos_token):
    data = InductionDataModule(n_ctx=32, d_vocab=64, bos_token=bos_token, max_noise_len=12)
    tokens = data.make_batch(Stream.TRAIN, 0, 512)
    assert tokens.shape == (512, 33) and tokens.dtype == torch.long
    prefix = int(bos_token is not None)
    if bos_token is not None:
        assert (tokens[:, 0] == bos_token).all() and (tokens[:, 1:] != bos_token).all()
    ordinary = set(range(64)) - ({bos_token} if bos_token is not None else set())
    assert set(tokens[:, prefix:].unique().tolist()) == ordinary
    noise_lengths = {split_repeats(sequence, prefix, 32)[0] for sequence in tokens.tolist()}
    # Chance repeats can make a shorter k fit too, never a longer one: every k from 0 to 12 shows up.
    assert noise_lengths == set(range(13))


def test_induction_without_noise_repeats_the_half_after_bos():
    tokens = InductionDataModule(n_ctx=16, d_vocab=20, max_noise_len=0).make_batch(Stream.TRAIN, 0, 64)
    assert torch.equal(tokens[:, 1:9], tokens[:, 9:17])


def test_induction_link_values():
    data = InductionDataModule(n_ctx=24, d_vocab=50)
    assert (data.n_ctx, data.d_vocab, data.first_target_pos) == (24, 50, 0)


def test_recurrence_link_values():
    data = AffineRecurrenceDataModule(vector_dim=8, seq_len=10, order=2)
    assert (data.n_ctx, data.d_vocab, data.first_target_pos) == (9, 8, 4)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: DigitsDataModule(batch_size=0), "batch_size=0"),
        (lambda: DigitsDataModule(n_ctx=1), "n_ctx=1"),
        (lambda: BosIntsDataModule(d_vocab=101, bos_token=101), "bos_token=101"),
        (lambda: BosIntsDataModule(d_vocab=10, bos_token=-1), "bos_token=-1"),
        (lambda: AffineRecurrenceDataModule(seq_len=14, order=14), "order=14"),
        (lambda: AffineRecurrenceDataModule(coefficient_bounds=(2.0, -2.0)), "coefficient_bounds"),
        (lambda: InductionDataModule(n_ctx=16, max_noise_len=14), "max_noise_len=14"),
        (lambda: InductionDataModule(max_noise_len=-1), "max_noise_len=-1"),
        (lambda: InductionDataModule(d_vocab=10, bos_token=10), "bos_token=10"),
        (lambda: InductionDataModule(d_vocab=2), "d_vocab=2"),
    ],
)
def test_bad_data_values_name_the_value(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_train_indices_continue_from_the_checkpointed_position():
    data = DigitsDataModule()
    data.load_state_dict({"next_train_index": 5})
    first = next(iter(data.train_dataloader()))
    assert int(first) == 5
    assert data.state_dict() == {"next_train_index": 5}
