"""What heads' scores prefer, on hand-set circuits: their own token, recent keys, a rotary offset, constant k."""

from __future__ import annotations

import math

import pytest
import torch

from lit_interp.analysis import run_analysis
from lit_interp.analysis.circuits import full_qk_circuits
from lit_interp.analysis.qk_preferences import qk_diagonal_contrast, recency_preference
from lit_interp.analysis.rotary import position_similarity, rotary_qk_offset, rotary_qk_offset_scores
from lit_interp.analysis.term_importance import attention_score_terms
from lit_interp.tasks.base import Stream

from .conftest import hooked, tiny_task


def test_a_head_avoiding_its_own_token_has_a_negative_diagonal_contrast():
    model = hooked()  # d_head = d_model = d_vocab = 16, attn_scale 4
    with torch.no_grad():
        model.embed.W_E.copy_(torch.eye(16))
        model.blocks[0].attn.W_Q[0] = -3 * torch.eye(16)
        model.blocks[0].attn.W_K[0] = torch.eye(16)  # own token scores -3, every other token 0
    contrast = qk_diagonal_contrast(full_qk_circuits(model), torch.tensor([4.0]))
    assert contrast.item() == pytest.approx(-3 / 4)


def test_the_contrast_ignores_a_constant_per_query_and_the_excluded_tokens():
    circuit = torch.zeros(1, 1, 4, 4)
    circuit[..., [0, 1, 2], [0, 1, 2]] = 2.0
    circuit += torch.tensor([1.0, 5.0, -2.0, 0.0])[:, None]  # a query-dependent constant: the softmax ignores it
    circuit[..., 3, :] = circuit[..., :, 3] = 100.0  # token 3 (BOS) attended and attending anyhow
    assert qk_diagonal_contrast(circuit, torch.ones(1), excluded_tokens=[3]).item() == pytest.approx(2.0)


def test_recency_preference_of_rising_falling_and_flat_scores():
    keys = torch.arange(6.0)
    rising = keys.expand(6, 6)[None]
    assert recency_preference(rising).item() == pytest.approx(1.0)
    assert recency_preference(-rising).item() == pytest.approx(-1.0)
    assert recency_preference(-rising, first_key=1).item() == pytest.approx(-1.0)
    assert math.isnan(recency_preference(torch.zeros(1, 6, 6)).item())
    assert math.isnan(recency_preference(rising[..., :2, :2]).item())  # no query sees 3 keys
    own_low = rising.clone()
    own_low[0, 5, 5] = -10.0  # the last query scores itself lowest: its own key counts
    ranks = [1, 2, 3, 4, 5, 0]  # keys 0..4 rising, the query's own key 5 last
    mean_rank, mean_key = sum(ranks) / 6, 2.5
    covariance = sum((r - mean_rank) * (k - mean_key) for r, k in zip(ranks, range(6)))
    last = covariance / sum((k - mean_key) ** 2 for k in range(6))  # equal spreads: ranks of 0..5
    assert recency_preference(own_low).item() == pytest.approx((3 * 1.0 + last) / 4)  # queries 2, 3, 4 and 5


def test_the_snapshot_reads_recency_off_the_last_layer_k_plus_q_term():
    module, data = tiny_task("bos_ints_attn_only")
    summary, _ = run_analysis(module, data, step=0, probe_batch_size=8, hook_mean_ablation=False, expensive=False)
    batch = data.make_batch(Stream.PROBE, 0, 8)
    _, cache = module.model.run_with_cache(batch)
    term = attention_score_terms(module.model, cache, 1)["kq_comp"].mean(0)
    assert summary["heads"]["L1H0"]["kq_recency"] == pytest.approx(recency_preference(term, 1).item(), rel=1e-5)
    assert "kq_recency" not in summary["heads"]["L0H0"]
    assert "qk_diagonal_contrast" in summary["heads"]["L0H0"]


def constant_rotary_head(offset: int):
    """A rotary head (d_head 2, 1 radian per position) whose q and k are constant and k is q rotated by `offset`."""
    model = hooked(d_head=2, positional_embedding_type="rotary", rotary_dim=2)
    angle = torch.tensor(float(offset))
    with torch.no_grad():
        model.blocks[0].attn.W_Q.zero_()
        model.blocks[0].attn.W_K.zero_()
        model.blocks[0].attn.b_Q[0] = torch.tensor([3.0, 0.0])
        model.blocks[0].attn.b_K[0] = 3.0 * torch.stack([angle.cos(), angle.sin()])
    return model


@pytest.mark.parametrize("offset", [1, 3])
def test_the_rotary_offset_is_the_one_the_head_s_own_scores_peak_at(offset):
    model = constant_rotary_head(offset)
    _, cache = model.run_with_cache(torch.randint(0, 16, (2, 8)))
    scores = rotary_qk_offset_scores(model, cache)
    assert rotary_qk_offset(scores).item() == offset
    real = cache["attn_scores", 0][0, 0, 7].flip(0)  # the last query's scores, offset 0 first
    torch.testing.assert_close(scores[0, 0], real)
    assert position_similarity(cache, 1, "k").item() == pytest.approx(1.0)


def test_the_snapshot_of_a_rotary_model_has_the_offset_and_k_constancy():
    module, data = tiny_task("prev_token_digits")
    summary, tensors = run_analysis(module, data, step=0, probe_batch_size=8, hook_mean_ablation=False, expensive=False)
    heads = summary["heads"]["L0H0"]
    assert 0 <= heads["rotary_qk_offset"] < 10 and -1 <= heads["rotary_k_similarity"] <= 1
    assert tensors["rotary_qk_offset_scores"].shape == (1, 1, 10)
