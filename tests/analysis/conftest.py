"""Analysis test fixtures: seeded single-threaded torch, tiny task modules per config, hand-built HookedTransformers."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from lit_interp.tasks.affine_recurrence import AffineRecurrenceDataModule, AffineRecurrenceModule
from lit_interp.tasks.bos_ints import BosIntsDataModule, BosIntsModule
from lit_interp.tasks.induction import InductionDataModule, InductionModule
from lit_interp.tasks.modular_addition import ModularAdditionDataModule, ModularAdditionModule
from lit_interp.tasks.prev_token_digits import DigitsDataModule, PrevTokenDigitsModule


@pytest.fixture(autouse=True)
def seeded_single_threaded():
    # Tiny tensors: on a busy 2-core machine, thread hand-offs cost ~10x the arithmetic.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def tiny_task(name: str):
    """(module, datamodule) shaped like configs/<name>.yaml, shrunk to d_model=16."""
    if name == "prev_token_digits":
        return PrevTokenDigitsModule(d_model=16), DigitsDataModule(batch_size=8)
    if name == "bos_ints_attn_only":
        return BosIntsModule(d_model=16, d_head=16, biases=False), BosIntsDataModule(batch_size=8)
    if name == "bos_ints_mlp":
        module = BosIntsModule(
            n_ctx=12, d_vocab=30, d_model=16, d_head=16, attn_only=False, d_mlp=32, normalization_type="LN"
        )
        return module, BosIntsDataModule(n_ctx=12, d_vocab=30, bos_token=0, batch_size=8)
    if name == "affine_recurrence":
        module = AffineRecurrenceModule(
            n_ctx=13, d_vocab=40, first_target_pos=2, n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32
        )
        return module, AffineRecurrenceDataModule(batch_size=8)
    if name == "modular_addition":
        module = ModularAdditionModule(d_vocab=24, d_model=16, n_heads=2, d_head=8, d_mlp=32)
        return module, ModularAdditionDataModule(p=23)
    if name == "induction":
        module = InductionModule(n_ctx=16, d_vocab=16, d_model=16, n_heads=2, d_head=8)
        return module, InductionDataModule(n_ctx=16, d_vocab=16, max_noise_len=4, batch_size=8)
    raise ValueError(name)


TASKS = [
    "prev_token_digits",
    "bos_ints_attn_only",
    "bos_ints_mlp",
    "affine_recurrence",
    "modular_addition",
    "induction",
]


def hooked(**config) -> HookedTransformer:
    """A small attention-only, no-norm HookedTransformer; keyword arguments override the config."""
    defaults = dict(
        n_layers=1,
        d_model=16,
        n_heads=1,
        d_head=16,
        n_ctx=8,
        d_vocab=16,
        attn_only=True,
        normalization_type=None,
        act_fn="relu",
    )
    model = HookedTransformer(HookedTransformerConfig(**{**defaults, **config}, device="cpu"))
    model.eval()
    return model


def seed_001_score_terms(model, cache):
    """Seed 001's four layer-1 terms, its own formula: e W_QK e^T, e W_QK W_OV^T e^T A^T, A e W_OV W_QK e^T, and
    A e W_OV W_QK W_OV^T e^T A^T (e the embeddings, A layer 0's pattern, one head per layer, no biases)."""
    e, A = cache["embed"][:, None], cache["pattern", 0]
    W_QK, W_OV = model.QK[1, 0].AB, model.OV[0, 0].AB
    scale = model.cfg.d_head**0.5
    return {
        "direct": e @ W_QK @ e.mT / scale,
        "k_comp": e @ W_QK @ W_OV.mT @ e.mT @ A.mT / scale,
        "q_comp": A @ e @ W_OV @ W_QK @ e.mT / scale,
        "kq_comp": A @ e @ W_OV @ W_QK @ W_OV.mT @ e.mT @ A.mT / scale,
    }
