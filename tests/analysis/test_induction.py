"""Induction analyses on a hand-set induction circuit (answers known) and on a random model (scores low)."""

from __future__ import annotations

import math

import pytest
import torch

import lit_interp.analysis.induction as induction_module
from lit_interp.analysis import run_analysis
from lit_interp.analysis.circuits import composition_scores
from lit_interp.analysis.induction import (
    MIN_PREFIX_MATCHING_QUERIES,
    in_context_losses,
    induction_circuit,
    predicts_next_token,
    prefix_matching_scores,
    previous_occurrences,
    random_composition_score,
)
from lit_interp.analysis.patterns import mean_attention_patterns, previous_token_scores, repeated_sequence_scores
from lit_interp.analysis.weights import processed_copy
from lit_interp.tasks.base import Stream
from lit_interp.tasks.induction import InductionDataModule, InductionModule

from .conftest import hooked, tiny_task

D_VOCAB, N_CTX = 8, 16
TOKENS, PREVIOUS, POSITIONS, OUTPUT = 0, D_VOCAB, 2 * D_VOCAB, 2 * D_VOCAB + N_CTX  # residual subspaces
D_MODEL = 3 * D_VOCAB + N_CTX
PREVIOUS_TOKEN_HEAD, INDUCTION_HEAD = 1, 0  # L0H1 writes the previous token, L1H0 reads it through its keys


def hand_set_induction_circuit(scale: float = 10.0):
    """Two layers of two heads; residual = [token | previous token | position | output] one-hot blocks.

    L0H1 attends from position q to q - 1 by positions and writes that token into the previous-token
    block; L1H0's query reads the current token and its key the previous-token block (K-composition),
    so it attends to the position after an earlier copy of the current token and writes that position's
    token into the output block, which the unembedding reads. The other two heads are small and random.
    """
    model = hooked(n_layers=2, d_model=D_MODEL, n_heads=2, d_head=N_CTX, n_ctx=N_CTX, d_vocab=D_VOCAB)
    eye_vocab, eye_ctx = torch.eye(D_VOCAB), torch.eye(N_CTX)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.01 * torch.randn_like(parameter))
        for parameter in (model.embed.W_E, model.pos_embed.W_pos, model.unembed.W_U, model.unembed.b_U):
            parameter.zero_()
        for block in model.blocks:
            for name in ("b_Q", "b_K", "b_V", "b_O"):
                getattr(block.attn, name).zero_()
        model.embed.W_E[:, TOKENS : TOKENS + D_VOCAB] = eye_vocab
        model.pos_embed.W_pos[:, POSITIONS : POSITIONS + N_CTX] = eye_ctx
        model.unembed.W_U[OUTPUT : OUTPUT + D_VOCAB] = scale * eye_vocab

        previous = model.blocks[0].attn, PREVIOUS_TOKEN_HEAD
        _set_head(*previous, "W_Q", POSITIONS, scale * eye_ctx)
        _set_head(*previous, "W_K", POSITIONS, scale * eye_ctx.roll(1, dims=1))  # key k matches query k + 1
        _set_head(*previous, "W_V", TOKENS, eye_vocab)
        model.blocks[0].attn.W_O[PREVIOUS_TOKEN_HEAD] = 0
        model.blocks[0].attn.W_O[PREVIOUS_TOKEN_HEAD, :D_VOCAB, PREVIOUS : PREVIOUS + D_VOCAB] = eye_vocab

        induction = model.blocks[1].attn, INDUCTION_HEAD
        _set_head(*induction, "W_Q", TOKENS, scale * eye_vocab)
        _set_head(*induction, "W_K", PREVIOUS, scale * eye_vocab)
        _set_head(*induction, "W_V", TOKENS, eye_vocab)
        model.blocks[1].attn.W_O[INDUCTION_HEAD] = 0
        model.blocks[1].attn.W_O[INDUCTION_HEAD, :D_VOCAB, OUTPUT : OUTPUT + D_VOCAB] = eye_vocab
    return model


def _set_head(attn, head: int, name: str, first_row: int, block: torch.Tensor) -> None:
    """Head `head` of W_Q/W_K/W_V reads residual rows first_row.. through `block` (rows x d_head columns)."""
    weight = getattr(attn, name)
    weight[head] = 0
    weight[head, first_row : first_row + block.shape[0], : block.shape[1]] = block


def distinct_segments(batch: int, bos: int = 0) -> torch.Tensor:
    """`[BOS, r]` with r a permutation of the ordinary tokens 1..7, padded with a repeat of r to N_CTX."""
    segments = torch.stack([torch.randperm(D_VOCAB - 1) + 1 for _ in range(batch)])
    return torch.cat([torch.full((batch, 1), bos), segments, segments], dim=1)[:, :N_CTX]


def random_sequences(batch: int) -> torch.Tensor:
    """BOS then random ordinary tokens: many tokens occur twice, so prefix matching has queries to score."""
    return torch.cat([torch.zeros(batch, 1, dtype=torch.long), torch.randint(1, D_VOCAB, (batch, N_CTX - 1))], dim=1)


def batch_patterns(model, tokens):
    _, cache = model.run_with_cache(tokens)
    return torch.stack([cache["pattern", layer] for layer in range(model.cfg.n_layers)], dim=1)


def test_previous_occurrences_find_the_single_earlier_copy():
    tokens = torch.tensor([[5, 3, 5, 5, 2, 3]])
    assert previous_occurrences(tokens).tolist() == [[-1, -1, 0, -1, -1, 1]]  # a third 5 has two earlier copies


def test_the_hand_set_circuit_scores_induction_and_prefix_matching_one():
    model = hand_set_induction_circuit()
    _, induction, _ = repeated_sequence_scores(model, distinct_segments(16), prefix_len=1)
    assert induction[1, INDUCTION_HEAD].item() == pytest.approx(1.0, abs=1e-3)
    assert induction[0].max().item() < 0.3 and induction[1, 1 - INDUCTION_HEAD].item() < 0.3
    tokens = random_sequences(16)
    scores, n_queries = prefix_matching_scores(batch_patterns(model, tokens), tokens)
    assert n_queries >= MIN_PREFIX_MATCHING_QUERIES
    assert scores[1, INDUCTION_HEAD].item() == pytest.approx(1.0, abs=1e-3)
    assert scores[0].max().item() < 0.3


def test_prefix_matching_counts_only_queries_with_a_single_earlier_copy(monkeypatch):
    model = hand_set_induction_circuit()
    # 1 thrice: its third copy is left out; 6 6 and 7 7: the position after the first copy is the query itself.
    tokens = torch.tensor([[0, 1, 2, 1, 3, 1, 4, 2, 5, 6, 6, 3, 4, 5, 7, 7]])
    counted = [(3, 2), (7, 3), (11, 5), (12, 7), (13, 9)]  # (query, position after its one earlier copy)
    patterns = batch_patterns(model, tokens)
    few, n_few = prefix_matching_scores(patterns, tokens)
    assert n_few == len(counted) < MIN_PREFIX_MATCHING_QUERIES and torch.isnan(few).all()
    monkeypatch.setattr(induction_module, "MIN_PREFIX_MATCHING_QUERIES", 1)
    scores, n_queries = prefix_matching_scores(patterns, tokens)
    assert n_queries == len(counted)
    expected = torch.stack([patterns[0, :, :, query, key] for query, key in counted]).mean(0)
    torch.testing.assert_close(scores, expected)


def test_prefix_matching_without_enough_repeats_is_nan():
    model = hand_set_induction_circuit()
    tokens = distinct_segments(1)[:, :D_VOCAB]  # no token repeats
    scores, n_queries = prefix_matching_scores(batch_patterns(model, tokens), tokens)
    assert n_queries == 0 and torch.isnan(scores).all()


def test_the_hand_set_circuit_predicts_the_repeat_and_not_the_first_copy():
    losses = in_context_losses(hand_set_induction_circuit(), distinct_segments(16), prefix_len=1)
    assert losses["repeated_half_loss"] < 0.01
    assert losses["first_half_loss"] > math.log(D_VOCAB)  # it copies the earlier tokens, all of them wrong here
    assert losses["in_context_loss"] == pytest.approx(losses["repeated_half_loss"] - losses["first_half_loss"])


def test_the_hand_set_circuit_is_found_with_high_k_composition():
    model = hand_set_induction_circuit()
    _, induction, _ = repeated_sequence_scores(model, distinct_segments(16), prefix_len=1)
    _, cache = model.run_with_cache(random_sequences(16))
    prev_token = previous_token_scores(mean_attention_patterns(cache, 2))
    scores = composition_scores(processed_copy(model, center_unembed=True))
    circuit = induction_circuit(prev_token, induction, scores["k"], D_MODEL)
    writer, reader = PREVIOUS_TOKEN_HEAD, 2 + INDUCTION_HEAD  # all_head_labels() order
    assert (circuit["previous_token_layer"], circuit["previous_token_head"]) == (0, PREVIOUS_TOKEN_HEAD)
    assert (circuit["induction_layer"], circuit["induction_head"]) == (1, INDUCTION_HEAD)
    assert circuit["prev_token_score"] == pytest.approx(1.0, abs=1e-3)
    assert circuit["induction_score"] == pytest.approx(1.0, abs=1e-3)
    # Identity blocks of rank D_VOCAB aligned exactly: the score's ceiling for them is 1/sqrt(D_VOCAB).
    assert circuit["k_composition"] == pytest.approx(1 / math.sqrt(D_VOCAB), rel=0.05)
    assert circuit["k_composition"] > 2 * circuit["random_k_composition"]
    assert circuit["other_k_composition"] == pytest.approx(scores["k"][1 - PREVIOUS_TOKEN_HEAD, reader].item())
    assert circuit["other_k_composition"] < circuit["random_k_composition"]  # the small random head
    assert scores["q"][writer, reader] < 0.05 and scores["v"][writer, reader] < 0.05  # only the keys read it


def test_a_random_model_scores_low():
    model = hooked(n_layers=2, d_model=D_MODEL, n_heads=2, d_head=N_CTX, n_ctx=N_CTX, d_vocab=D_VOCAB)
    _, induction, _ = repeated_sequence_scores(model, distinct_segments(16), prefix_len=1)
    tokens = random_sequences(16)
    prefix, _ = prefix_matching_scores(batch_patterns(model, tokens), tokens)
    assert induction.max() < 0.3 and prefix.max() < 0.3
    assert abs(in_context_losses(model, distinct_segments(16), prefix_len=1)["in_context_loss"]) < 0.1
    _, cache = model.run_with_cache(tokens)
    prev_token = previous_token_scores(mean_attention_patterns(cache, 2))
    circuit = induction_circuit(
        prev_token, induction, composition_scores(processed_copy(model, center_unembed=True))["k"], D_MODEL
    )
    assert circuit["k_composition"] < 1.6 * random_composition_score(D_MODEL)


def test_random_composition_score_is_the_rms_score_under_random_rotations():
    generator = torch.Generator().manual_seed(0)
    writer, reader = torch.randn(32, 4, generator=generator), torch.randn(4, 32, generator=generator)
    writer = writer @ torch.randn(4, 32, generator=generator)  # rank 4, like a head's OV
    reader = reader.T @ reader
    squared = []
    for _ in range(400):
        rotation, _ = torch.linalg.qr(torch.randn(32, 32, generator=generator))
        squared.append(((writer @ rotation @ reader).norm() / (writer.norm() * reader.norm())) ** 2)
    assert torch.stack(squared).mean().sqrt().item() == pytest.approx(random_composition_score(32), rel=0.1)


def test_no_layer_beyond_the_first_or_nan_scores_give_nan():
    nan = torch.full((2, 2), math.nan)
    circuit = induction_circuit(torch.zeros(2, 2), nan, torch.zeros(4, 4), 16)
    assert math.isnan(circuit["k_composition"]) and math.isnan(circuit["other_k_composition"])
    assert circuit["random_k_composition"] == 0.25
    single = induction_circuit(torch.ones(2, 1), torch.ones(2, 1), torch.eye(2).roll(1, 1), 16)
    assert "other_k_composition" not in single and single["k_composition"] == 1.0  # one head a layer: no others


class CurrentTokenTask(InductionModule):
    """Reads all but the last token like a next-token task, but is scored on the token it reads."""

    def targets(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, self.hparams.first_target_pos : -1]


def test_only_next_token_tasks_predict_the_next_token():
    module, data = InductionModule(n_ctx=12, d_vocab=10, d_model=16, d_head=4), InductionDataModule(12, 10)
    assert predicts_next_token(module, data.make_batch(Stream.PROBE, 0, 4))
    current = CurrentTokenTask(n_ctx=12, d_vocab=10, d_model=16, d_head=4)
    assert not predicts_next_token(current, data.make_batch(Stream.PROBE, 0, 4))
    for task in ("bos_ints_attn_only", "affine_recurrence"):
        other, other_data = tiny_task(task)
        assert not predicts_next_token(other, other_data.make_batch(Stream.PROBE, 0, 4))


def test_the_snapshot_of_the_hand_set_circuit_reads_it():
    module = InductionModule(n_ctx=N_CTX, d_vocab=D_VOCAB, d_model=D_MODEL, n_heads=2, d_head=N_CTX)
    module.model.load_state_dict(hand_set_induction_circuit().state_dict())
    data = InductionDataModule(n_ctx=N_CTX, d_vocab=D_VOCAB, max_noise_len=4, batch_size=8)
    summary, _ = run_analysis(module, data, step=1, probe_batch_size=64, expensive=False, hook_mean_ablation=False)
    induction_label = f"L1H{INDUCTION_HEAD}"
    assert summary["heads"][induction_label]["prefix_matching_score"] > 0.9
    assert summary["in_context"]["in_context_loss"] < -1.0
    probe = module.model_input(data.make_batch(Stream.PROBE, 0, 64))
    assert summary["in_context"] == pytest.approx(in_context_losses(module.model, probe, prefix_len=1))  # after BOS
    circuit = summary["induction_circuit"]
    assert (circuit["previous_token_head"], circuit["induction_head"]) == (PREVIOUS_TOKEN_HEAD, INDUCTION_HEAD)
    assert circuit["k_composition"] == pytest.approx(1 / math.sqrt(D_VOCAB), rel=0.05)
    terms = summary["term_importance"]  # only removing the K-composition term changes what the model does
    assert abs(terms["k_comp"] - summary["loss"]) > 0.5 and terms["q_comp"] == pytest.approx(summary["loss"], abs=1e-3)
