"""Slow: each config, as shipped (analysis callbacks on), trains to its seed's figure, and the
last analysis snapshot rediscovers what the seed notebook found by hand; DDP on CPU (gloo)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from analysis.conftest import seed_001_score_terms
from conftest import CONFIGS, QUIET

from lit_interp.analysis.term_importance import TERMS, attention_score_terms
from lit_interp.commands.train import run_cli
from lit_interp.tasks.base import BIAS_NAME, Stream
from lit_interp.tasks.bos_ints import BosIntsDataModule

pytestmark = pytest.mark.slow


def train(config: str | None) -> tuple[dict[str, float], dict, object]:
    """Fit a config as shipped; its final metrics, its last analysis snapshot, the trained HookedTransformer."""
    args = ["--config", str(CONFIGS / f"{config}.yaml")] if config else []
    cli = run_cli(["fit", *args, *QUIET])
    snapshots = sorted(Path(cli.trainer.log_dir, "analysis").glob("step_*.json"))
    assert snapshots, "the config's analysis callbacks wrote no snapshot"
    last = json.loads(snapshots[-1].read_text())
    assert last["step"] == cli.trainer.global_step, "the last snapshot is of the final weights"
    metrics = {name: float(value.detach()) for name, value in cli.trainer.callback_metrics.items()}
    return metrics, last, cli.model.model


def test_seed_000_digits_previous_token_head_with_position_free_queries():
    metrics, snapshot, _ = train(None)  # the default config
    assert metrics["val/acc"] >= 0.999
    head = snapshot["heads"]["L0H0"]
    assert head["prev_token_score"] >= 0.9, "the head attends to the previous digit"
    assert head["rotary_q_similarity"] >= 0.9, "pre-rotary q is nearly the same at every position"


def test_seed_001_bos_ints_attn_only_layer_1_copies_the_previous_token():
    metrics, snapshot, model = train("bos_ints_attn_only")
    assert metrics["val/acc"] >= 0.989
    assert model.W_pos.abs().sum() == 0, "positional embeddings stay zero"
    later = snapshot["heads"]["L1H0"]
    assert later["prev_token_score"] >= 0.5, "layer 1's head attends to the previous token"
    assert later["ov_copying_score"] >= 0.95, "and its OV circuit copies what it attends to"
    assert later["ov_eigen_score"] >= 0.9, "the full OV circuit's eigenvalues are positive: a copying head"
    adversarial = snapshot["adversarial"]
    assert adversarial["no_bos_loss"] >= 20 * adversarial["clean_loss"], "position comes from BOS"
    assert adversarial["repeated_tokens_loss"] >= 5 * adversarial["clean_loss"], "repeated tokens confuse the counting"
    terms = snapshot["term_importance"]  # seed 001: the direct and K+Q terms matter most
    assert min(terms["direct"], terms["kq_comp"]) > max(terms["k_comp"], terms["q_comp"]), terms
    biases = {name: p for name, p in model.named_parameters() if BIAS_NAME.search(name)}
    assert biases and all(p.abs().sum() == 0 and not p.requires_grad for p in biases.values()), "no biases, as in seed"
    # The seed's own check: its four terms sum to the layer-1 scores (atol 1e-3); and ours are its terms.
    with torch.no_grad():
        _, cache = model.run_with_cache(BosIntsDataModule().make_batch(Stream.PROBE, 0, 256).to(model.W_E.device))
        seed, ours = seed_001_score_terms(model, cache), attention_score_terms(model, cache, 1)
    causal = torch.ones(10, 10, dtype=torch.bool, device=model.W_E.device).tril()
    torch.testing.assert_close(sum(seed.values())[..., causal], cache["attn_scores", 1][..., causal], atol=1e-3, rtol=0)
    for name in TERMS:
        torch.testing.assert_close(ours[name][..., causal], seed[name][..., causal], atol=1e-3, rtol=1e-4)


def test_seed_004_bos_ints_mlp_needs_its_embedding():
    metrics, snapshot, model = train("bos_ints_mlp")
    assert metrics["val/loss"] <= 0.005
    assert model.W_pos.abs().sum() == 0, "positional embeddings stay zero"
    sweep = {name: hook["mean_ablation_loss"] for name, hook in snapshot["hooks"].items()}
    assert len(sweep) >= 20, "the sweep covers every hook"
    assert sweep["hook_embed"] >= 1.0 and sweep["hook_embed"] >= 100 * snapshot["loss"], (
        "mean-ablating the embedding destroys it"
    )
    ranked = sorted(sweep, key=sweep.get, reverse=True)
    assert "hook_embed" in ranked[:5], ranked[:5]
    assert sweep[ranked[-1]] <= 2 * snapshot["loss"], "some hooks barely matter: the sweep ranks them"


def test_seed_002_affine_recurrence_layer_0_has_previous_vector_heads():
    metrics, snapshot, _ = train("affine_recurrence")
    assert metrics["val/loss"] <= 1e-3
    assert metrics["val/r2"] >= 0.95
    scores = {label: head["prev_token_score"] for label, head in snapshot["heads"].items()}
    layer_0 = [score for label, score in scores.items() if label.startswith("L0H")]
    later = [score for label, score in scores.items() if not label.startswith("L0H")]
    assert min(layer_0) >= 0.5 > max(later), scores  # layer 0's heads attend to the previous vector, later ones do not
