"""Fourier progress measures, each on an input built so its answer is known: spectra, Gini, key frequencies, losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lit_interp.analysis import fourier, run_analysis
from lit_interp.tasks.base import Stream
from lit_interp.tasks.modular_addition import ModularAdditionDataModule, ModularAdditionModule, pair_tokens

P = 23


def wave(kind, k: int, x: torch.Tensor, p: int = P) -> torch.Tensor:
    return kind(2 * math.pi * k * x.double() / p)


def test_the_basis_is_orthonormal_constant_then_cosine_and_sine_of_each_frequency():
    basis = fourier.fourier_basis(P)
    torch.testing.assert_close(basis @ basis.T, torch.eye(P, dtype=torch.float64))
    x = torch.arange(P)
    torch.testing.assert_close(basis[5], wave(torch.cos, 3, x) / math.sqrt(P / 2))  # component 2k-1: cos k
    torch.testing.assert_close(basis[6], wave(torch.sin, 3, x) / math.sqrt(P / 2))
    assert fourier.component_names(P)[:4] == ["const", "cos 1", "sin 1", "cos 2"]


def test_an_embedding_of_known_frequencies_has_only_their_components():
    x = torch.arange(P)
    W_E = torch.stack([wave(f, k, x) for k in (2, 9) for f in (torch.cos, torch.sin)], dim=1)  # [p 4]
    W_E = torch.cat([W_E, torch.zeros(P, 4, dtype=torch.float64)], 1).float()
    norms = fourier.embedding_fourier_norms(W_E)
    nonzero = {name for name, norm in zip(fourier.component_names(P), norms.tolist()) if norm > 1e-4}
    assert nonzero == {"cos 2", "sin 2", "cos 9", "sin 9"}
    torch.testing.assert_close(norms[3], torch.tensor(math.sqrt(P / 2)))
    assert set(fourier.frequency_norms(norms).argsort(descending=True)[:2].add(1).tolist()) == {2, 9}
    assert fourier.gini(norms) == pytest.approx((P - 4) / P, abs=1e-5)  # four equal norms of p
    assert fourier.gini(fourier.embedding_fourier_norms(torch.randn(P, 8))) < 0.4


def test_gini_of_known_distributions():
    assert fourier.gini(torch.ones(10)) == pytest.approx(0.0)
    assert fourier.gini(torch.tensor([0.0, 0.0, 0.0, 5.0])) == pytest.approx(0.75)
    assert fourier.gini(torch.tensor([0.0, 1.0, 0.0, 1.0])) == pytest.approx(0.5)
    assert math.isnan(fourier.gini(torch.zeros(4))) and math.isnan(fourier.gini(torch.tensor([1.0, float("nan")])))


def test_each_neuron_is_given_the_frequency_that_explains_its_variance():
    a, b = torch.arange(P)[:, None], torch.arange(P)[None, :]
    neurons = torch.stack(
        [
            3 + wave(torch.cos, 4, a) * wave(torch.cos, 4, b),  # one frequency, quadratic terms: all of it
            wave(torch.sin, 6, a + b),  # sin(w(a+b)) = sin wa cos wb + cos wa sin wb
            wave(torch.cos, 2, a) + wave(torch.cos, 5, b),  # two frequencies, equal variance
            wave(torch.cos, 2, a) * wave(torch.cos, 5, b),  # a term mixing two frequencies: in no block
            torch.full((P, P), 2.0, dtype=torch.float64),  # constant: no variance to explain
        ],
        dim=-1,
    )
    fractions = fourier.frequency_fractions(fourier.neuron_fourier(neurons))
    assert fractions.shape == (11, 5)
    torch.testing.assert_close(fractions[3, 0], torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(fractions[5, 1], torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(fractions[[1, 4], 2], torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert fractions[:, 3].abs().max() < 1e-12 and fractions[:, 4].isnan().all()
    frequency, fraction = fourier.neuron_frequencies(fractions)
    assert frequency[:2].tolist() == [4, 6] and frequency[4] == 0 and math.isnan(fraction[4])
    torch.testing.assert_close(fraction[:2], torch.ones(2, dtype=torch.float64))


def test_key_frequencies_are_those_of_enough_well_explained_neurons():
    frequency = torch.tensor([3] * 40 + [7] * 30 + [5] * 20 + [9] * 2 + [11] * 1 + [0] * 7)
    fraction = torch.tensor([0.9] * 40 + [0.6] * 30 + [0.3] * 20 + [0.5] * 2 + [0.99] * 1 + [float("nan")] * 7)
    # 100 neurons: a key frequency needs 2 explained at least half; 5's are explained less, 11 has one neuron.
    assert fourier.key_frequencies(frequency, fraction) == [3, 7, 9]
    assert fourier.key_frequencies(torch.zeros(8, dtype=torch.long), torch.full((8,), float("nan"))) == []


def logit_table(terms) -> torch.Tensor:
    """`[p² c]`: rows a·p + b, each term a function of (a, b, c)."""
    a, b, c = torch.arange(P)[:, None, None], torch.arange(P)[None, :, None], torch.arange(P)[None, None, :]
    return sum(term(a, b, c) for term in terms).reshape(P * P, P)


def full_loss(logits: torch.Tensor, pairs: torch.Tensor) -> float:
    return fourier.pair_loss_and_accuracy(logits, pairs)[0]


def key_terms(scale: float = 4.0):
    return [lambda a, b, c, k=k: scale * wave(torch.cos, k, a + b - c) for k in (3, 8)]


def test_a_table_of_key_frequencies_keeps_its_loss_restricted_and_loses_it_excluded():
    logits = logit_table(key_terms())
    all_pairs, train = torch.arange(P * P), torch.arange(0, P * P, 3)
    coefficients, mean = fourier.logit_sum_coefficients(logits), logits.mean(0)
    restricted = fourier.restricted_loss(mean, coefficients, [3, 8])
    assert restricted == pytest.approx(full_loss(logits, all_pairs), rel=1e-9) and restricted < 1.0
    excluded = fourier.excluded_loss(logits[train], train, coefficients, [3, 8])
    assert excluded == pytest.approx(math.log(P), rel=1e-9)  # nothing left: uniform logits
    assert fourier.restricted_loss(mean, coefficients, []) == pytest.approx(math.log(P), rel=1e-9)


def test_restricted_loss_drops_everything_but_the_key_sum_terms_and_keeps_each_outputs_mean():
    other_frequency = lambda a, b, c: 2.0 * wave(torch.cos, 5, a + b - c)  # noqa: E731
    not_a_sum = lambda a, b, c: 3.0 * wave(torch.cos, 3, a - c)  # the key frequency, but of a alone  # noqa: E731
    bias = lambda a, b, c: 0.5 * c.double() + 0 * a  # noqa: E731
    clean = logit_table(key_terms() + [bias])
    logits = logit_table(key_terms() + [bias, other_frequency, not_a_sum])
    coefficients, mean = fourier.logit_sum_coefficients(logits), logits.mean(0)
    all_pairs = torch.arange(P * P)
    assert fourier.restricted_loss(mean, coefficients, [3, 8]) == pytest.approx(full_loss(clean, all_pairs), rel=1e-9)
    train = torch.arange(1, P * P, 4)
    leftover = logit_table([bias, other_frequency, not_a_sum])
    assert fourier.excluded_loss(logits[train], train, coefficients, [3, 8]) == pytest.approx(
        full_loss(leftover, train), rel=1e-9
    )


def test_pair_loss_and_accuracy_score_the_rows_of_the_pairs_given():
    logits = torch.randn(P * P, P)
    pairs = torch.tensor([0, 5, 100, 528])
    labels = (pairs // P + pairs % P) % P
    loss, accuracy = fourier.pair_loss_and_accuracy(logits, pairs)
    assert loss == pytest.approx(F.cross_entropy(logits[pairs].double(), labels).item())
    assert accuracy == (logits[pairs].argmax(-1) == labels).double().mean().item()


def known_model(p: int = P, embedded=(2, 5, 7), read=(2, 7), d_mlp: int = 16) -> ModularAdditionModule:
    """Uniform attention, W_E of the `embedded` frequencies, neurons each reading one frequency of `read`.

    Every neuron also reads a large constant from `=` (dimension 6), so it never goes below zero: its
    activation is linear in the embedding of a and b, all of it in its own frequency's block. Neuron
    n writes, through W_out W_U, the logit direction cos or sin of its own frequency over c.
    """
    module = ModularAdditionModule(d_vocab=p + 1, d_model=8, n_heads=1, d_head=8, d_mlp=d_mlp)
    model = module.model
    x = torch.arange(p)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for slot, k in enumerate(embedded):
            model.W_E[:p, 2 * slot] = wave(torch.cos, k, x, p).float()
            model.W_E[:p, 2 * slot + 1] = wave(torch.sin, k, x, p).float()
            model.W_U[2 * slot] = wave(torch.cos, k, x, p).float()
            model.W_U[2 * slot + 1] = wave(torch.sin, k, x, p).float()
        model.W_E[p, 6] = 1.0
        model.blocks[0].attn.W_V[0] = torch.eye(8)
        model.blocks[0].attn.W_O[0] = torch.eye(8)
        generator = torch.Generator().manual_seed(0)
        for neuron in range(d_mlp):
            slot = embedded.index(read[neuron % len(read)])
            model.blocks[0].mlp.W_in[2 * slot : 2 * slot + 2, neuron] = torch.rand(2, generator=generator) - 0.5
            model.blocks[0].mlp.W_in[6, neuron] = 10.0
            model.blocks[0].mlp.W_out[neuron, 2 * slot + (neuron // len(read)) % 2] = 1.0
    return module


def test_a_model_built_from_known_frequencies_reports_them():
    module, data = known_model(), ModularAdditionDataModule(p=P)
    summary, tensors = run_analysis(module, data, step=1, probe_batch_size=8, expensive=False)
    assert summary["fourier"]["key_frequencies"] == [2, 7] and summary["fourier"]["n_key_frequencies"] == 2
    assert summary["fourier"]["neuron_fraction_explained"] == pytest.approx(1.0, abs=1e-6)
    assert summary["fourier"]["key_neuron_fraction"] == 1.0
    assert tensors["neuron_frequency"].tolist() == [2.0, 7.0] * 8
    # W_E: six equal components of 23 (frequency 5 is embedded but read by no neuron); W_L: four.
    assert summary["fourier"]["embed_gini"] == pytest.approx((P - 6) / P, abs=1e-5)
    assert summary["fourier"]["neuron_logit_gini"] == pytest.approx((P - 4) / P, abs=1e-5)
    assert tensors["embed_fourier_norms"].argsort(descending=True)[:6].sort().values.tolist() == [3, 4, 9, 10, 13, 14]
    constant = tensors["neuron_fourier_norms"][0, 0]
    others = tensors["neuron_fourier_norms"].flatten()[1:]
    assert constant > 0 and set((others > 1e-4 * constant).nonzero().flatten().add(1).tolist()) == {
        row * P + column
        for k in (2, 7)
        for row, column in [(0, 2 * k - 1), (0, 2 * k), (2 * k - 1, 0), (2 * k, 0)]  # linear in a and in b
    }


def test_progress_measures_are_the_splits_losses_and_recompute_from_the_tensors():
    torch.manual_seed(1)
    module = ModularAdditionModule(d_vocab=P + 1, d_model=16, n_heads=2, d_head=8, d_mlp=32)
    data = ModularAdditionDataModule(p=P, train_fraction=0.4)
    summary, tensors = run_analysis(module, data, step=3, probe_batch_size=8, expensive=False)
    measures = summary["progress_measures"]
    train = data.make_batch(Stream.TRAIN, 0, data.batch_size)
    test = data.make_batch(Stream.VAL, 0, data.val_batch_size)
    with torch.no_grad():
        for batch, name in ((train, "train"), (test, "test")):
            logits = module(batch)
            assert measures[f"{name}_loss"] == pytest.approx(module.loss(logits, batch).item(), rel=1e-5)
            accuracy = (logits[:, -1].argmax(-1) == module.targets(batch)[:, 0]).double().mean().item()
            assert measures[f"{name}_acc"] == pytest.approx(accuracy)
    keys = summary["fourier"]["key_frequencies"]
    restricted = fourier.restricted_loss(tensors["logit_mean"], tensors["logit_sum_coefficients"], keys)
    excluded = fourier.excluded_loss(
        tensors["train_logits"], tensors["train_pairs"], tensors["logit_sum_coefficients"], keys
    )
    assert measures["restricted_loss"] == pytest.approx(restricted, rel=1e-5)
    assert measures["excluded_loss"] == pytest.approx(excluded, rel=1e-5)
    own = {"restricted_loss": restricted, "excluded_loss": excluded}
    assert fourier.losses_with(tensors, keys) == pytest.approx(own)
    # Another key set, against a projection made here: least squares onto cos/sin(w_k(a+b)), k = 1, 4.
    logits = module.model(pair_tokens(torch.arange(P * P), P))[:, -1].detach().double()
    total = torch.arange(P * P) // P + torch.arange(P * P) % P
    design = torch.stack([wave(f, k, total) for k in (1, 4) for f in (torch.cos, torch.sin)], dim=1)
    kept = logits.mean(0) + design @ torch.linalg.lstsq(design, logits).solution
    assert fourier.losses_with(tensors, [1, 4])["restricted_loss"] == pytest.approx(
        full_loss(kept, torch.arange(P * P)), rel=1e-6
    )
    assert torch.equal(tensors["train_pairs"].long(), data.train_pairs)
    squares = sum(float(p.detach().double().pow(2).sum()) for p in module.model.parameters())
    assert measures["sum_squared_weights"] == pytest.approx(squares, rel=1e-9)
    with torch.no_grad():
        module.model.blocks[0].mlp.b_in.fill_(1.0)  # frozen, but a weight all the same
    summary, _ = run_analysis(module, data, step=3, probe_batch_size=8, expensive=False)
    assert summary["progress_measures"]["sum_squared_weights"] == pytest.approx(squares + 32, rel=1e-9)


def test_the_all_pairs_run_is_the_models_output_on_every_pair_in_pair_id_order():
    module = known_model()
    logits, neurons = fourier.all_pairs_run(module.model, P)
    tokens = pair_tokens(torch.tensor([0, 30, P * P - 1]), P)
    expected, cache = module.model.run_with_cache(tokens)
    torch.testing.assert_close(logits[[0, 30, P * P - 1]], expected[:, -1])
    torch.testing.assert_close(neurons[1, 7], cache["post", 0][1, -1])  # pair 30 = (1, 7)
