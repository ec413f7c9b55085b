"""Slow: configs/induction.yaml as shipped, one seed: a previous-token head and an induction head form in a
phase change, the induction head reading the previous-token head through K-composition."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import CONFIGS, QUIET

from lit_interp.analysis.learning_coefficient import devinterp_available
from lit_interp.analysis.phase_change import first_reaching, phase_change
from lit_interp.commands.train import run_cli

pytestmark = pytest.mark.slow


def best_induction_score(snapshot: dict) -> float:
    scores = [head["induction_score"] for label, head in snapshot["heads"].items() if not label.startswith("L0")]
    return max(score for score in scores if score is not None)


def test_induction_heads_form_in_a_phase_change():
    cli = run_cli(["fit", "--config", str(CONFIGS / "induction.yaml"), *QUIET])
    paths = sorted(Path(cli.trainer.log_dir, "analysis").glob("step_*.json"))
    snapshots = [json.loads(path.read_text()) for path in paths]
    steps = [snapshot["step"] for snapshot in snapshots]
    assert steps[-1] == cli.trainer.global_step == 2000

    in_context = [snapshot["in_context"]["in_context_loss"] for snapshot in snapshots]
    fall = phase_change(steps, in_context, min_fall=1.0)
    assert abs(in_context[0]) < 0.05 and fall.depth > 3.0, "from no in-context learning to most of log(63)"
    assert fall.relative_width < 0.5, f"a phase change, not a drift: {fall}"
    formed = first_reaching(steps, [best_induction_score(snapshot) for snapshot in snapshots], 0.5, rising=True)
    assert fall.start <= formed <= fall.end, (formed, fall)

    last = snapshots[-1]
    circuit = last["induction_circuit"]
    assert circuit["induction_layer"] == 1 and circuit["induction_score"] >= 0.7
    assert circuit["previous_token_layer"] == 0 and circuit["prev_token_score"] >= 0.5
    assert circuit["k_composition"] > 1.3 * max(circuit["random_k_composition"], circuit["other_k_composition"])
    assert last["term_importance"]["k_comp"] > last["loss"] + 0.4, "without K-composition the induction head fails"
    induction_label = f"L1H{circuit['induction_head']}"
    assert last["heads"][induction_label]["prefix_matching_score"] >= 0.4, "it matches content, not an offset"

    if devinterp_available():  # the learning coefficient rises through the phase change
        estimates = [
            (s["step"], s["learning_coefficient"]["llc_mean"]) for s in snapshots if "learning_coefficient" in s
        ]
        before = [value for step, value in estimates if step <= fall.start]
        after = [value for step, value in estimates if step >= fall.end]
        assert before and after and all(math.isfinite(value) for _, value in estimates)
        assert min(after) > 1.5 * max(before), estimates
