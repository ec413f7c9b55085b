"""Recurrences with a chosen c or length: built by the task's own generator, scored with the task's own loss."""

from __future__ import annotations

import pytest
import torch

from lit_interp.analysis.recurrence import recurrence_parameters
from lit_interp.analysis.recurrence_inputs import (
    attention_by_sign,
    loss_by_coefficient,
    loss_by_sequence_length,
    recurrences,
)

from .conftest import tiny_task


def silent_recurrence_model():
    """The tiny recurrence task with W_U = 0 and b_U = 0: it predicts the zero vector, so its loss is mean(target²)."""
    module, data = tiny_task("affine_recurrence")
    with torch.no_grad():
        module.model.unembed.W_U.zero_()
        module.model.unembed.b_U.zero_()
    return module, data


def test_recurrences_have_the_chosen_c_and_length_and_leave_the_datamodule_alone():
    _, data = tiny_task("affine_recurrence")
    sequences = recurrences(data, 4, c=-3.5)
    coefficients, _ = recurrence_parameters(sequences, order=1)
    torch.testing.assert_close(coefficients, torch.full((4, 1), -3.5), atol=1e-3, rtol=0)
    assert recurrences(data, 4, seq_len=5).shape == (4, 5, 40)
    assert data.coefficient_bounds == (-2.0, 2.0) and data.seq_len == 14
    assert torch.equal(recurrences(data, 4, c=1.0), recurrences(data, 4, c=1.0))  # deterministic
    first, other = recurrences(data, 4, c=1.0)[:, 0], recurrences(data, 4, c=-2.0)[:, 0]
    cosine = torch.nn.functional.cosine_similarity(first, other, dim=-1)
    torch.testing.assert_close(cosine, torch.ones(4))  # the same start at every c, rescaled by each sequence's norm


def test_loss_by_c_is_the_task_loss_on_each_grid_point_outside_the_training_range_too():
    module, data = silent_recurrence_model()
    grid = torch.tensor([-4.0, -1.0, 0.5, 3.0])
    losses, errors = loss_by_coefficient(module.model, module, data, grid, n_sequences=3)
    expected = [recurrences(data, 3, c=c)[:, 3:].pow(2).mean().item() for c in grid.tolist()]
    assert losses.tolist() == pytest.approx(expected, rel=1e-5)  # the zero prediction: the targets' mean square
    squares = recurrences(data, 3, c=-1.0)[:, 3:].pow(2).mean((1, 2))
    assert errors[1].item() == pytest.approx((squares.std() / 3**0.5).item(), rel=1e-5)
    assert len(set(losses.tolist())) == 4  # c changes the sequences
    module, data = tiny_task("affine_recurrence")  # a model that reads its input
    losses, _ = loss_by_coefficient(module.model, module, data, grid, n_sequences=3)
    batches = [recurrences(data, 3, c=c) for c in grid.tolist()]
    expected = [module.loss(module.model(module.model_input(batch)), batch).item() for batch in batches]
    assert losses.tolist() == pytest.approx(expected, rel=1e-5)


def test_loss_by_sequence_length_covers_every_length_with_a_target():
    module, data = silent_recurrence_model()
    losses = loss_by_sequence_length(module.model, module, data, n_sequences=3)
    assert list(losses) == list(range(4, 15))  # first_target_pos 2: the shortest has one target, at position 3
    squares = recurrences(data, 3, seq_len=6)[:, 3:].pow(2).mean((1, 2))
    assert losses[6] == pytest.approx((squares.mean().item(), (squares.std() / 3**0.5).item()), rel=1e-5)


def test_attention_by_sign_averages_each_side_and_leaves_an_empty_side_nan():
    patterns = torch.arange(3.0)[:, None, None, None, None].expand(3, 1, 1, 2, 2)
    by_sign = attention_by_sign(patterns, torch.tensor([-1.0, 2.0, -0.5]))
    assert by_sign[0, 0, 0, 0, 0].item() == 1.0 and by_sign[1, 0, 0, 0, 0].item() == 1.0  # (0 + 2) / 2 and 1
    assert torch.isnan(attention_by_sign(patterns, torch.tensor([1.0, 2.0, 3.0]))[0]).all()
