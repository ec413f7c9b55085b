"""`from lit_interp import load`: the README's notebook example, runs and checkpoints of every task, plain models."""

from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import inside, tiny_fit
from transformer_lens import HookedTransformer, HookedTransformerConfig

from lit_interp import load
from lit_interp.analysis.ablation import head_ablation_losses
from lit_interp.analysis.circuits import full_ov_circuits
from lit_interp.analysis.patterns import bos_scores, mean_attention_patterns, previous_token_scores
from lit_interp.checkpoints import load_checkpoint
from lit_interp.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--trainer.num_sanity_val_steps=0", "--data.init_args.val_batch_size=8"]


def notebook_example() -> str:
    """The first ```python block under the README's "## Notebook API" heading, else docs/notebook_example.py."""
    section = re.search(r"^## Notebook API\n(.*?)(?=^## |\Z)", (ROOT / "README.md").read_text(), re.M | re.S)
    block = re.search(r"^```python\n(.*?)^```", section.group(1), re.M | re.S) if section else None
    return block.group(1) if block else (ROOT / "docs/notebook_example.py").read_text()


@pytest.fixture(scope="module")
def run_root(tmp_path_factory) -> Path:
    """A tiny digits run in lightning_logs/version_0: checkpoints at steps 1 and 2, analysis snapshots up to step 2."""
    root = tmp_path_factory.mktemp("notebook")
    with inside(root):
        tiny_fit("prev_token_digits", "--trainer.max_steps=2", "--checkpoint.every_n_train_steps=1", *FAST)
    return root


def snapshot_steps(run_dir: Path) -> list[int]:
    return sorted(int(path.stem.removeprefix("step_")) for path in (run_dir / "analysis").glob("step_*.json"))


def test_notebook_example_runs_as_written(run_root, monkeypatch):
    monkeypatch.chdir(run_root)
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(notebook_example(), "notebook_example", "exec"), namespace)
    run, scores = namespace["run"], namespace["scores"]
    assert "L0H0" in printed.getvalue()
    assert run.step == 2 and run.checkpoint_path.name == "last.ckpt" and not run.model.training
    # One row per (step, head), every score of the snapshot files a column, with their values.
    steps = snapshot_steps(run.run_dir)
    assert steps[-1] == 2 and run.snapshots.steps == steps
    assert list(scores["step"]) == steps and set(scores["label"]) == {"L0H0"}
    for row, snapshot in zip(scores.to_dict("records"), run.snapshots.summaries):
        assert (row["step"], row["layer"], row["head"], row["label"]) == (snapshot["step"], 0, 0, "L0H0")
        for name, value in snapshot["heads"]["L0H0"].items():
            assert row[name] == value or (math.isnan(row[name]) and (value is None or math.isnan(value))), name
    # The example's probe batch is the one the last snapshot analyzed: the same score, recomputed here.
    recomputed = previous_token_scores(namespace["patterns"])[0, 0].item()
    assert recomputed == pytest.approx(run.snapshots[-1].summary["heads"]["L0H0"]["prev_token_score"], rel=1e-5)
    summary, tensors = run.analyze(hook_mean_ablation=False)
    assert summary["step"] == 2 and summary["loss"] == pytest.approx(run.snapshots[-1].summary["loss"], rel=1e-5)
    assert tensors["attention_patterns"].shape == (1, 1, 10, 10)


def test_load_a_checkpoint_file_or_a_run_without_last(run_root):
    checkpoints = run_root / "lightning_logs/version_0/checkpoints"
    run = load(checkpoints / "step_0000001.ckpt")
    assert run.step == 1 and run.run_dir == checkpoints.parent
    assert run.snapshots.steps == snapshot_steps(run.run_dir)
    weights = load_checkpoint(checkpoints / "step_0000001.ckpt")["state_dict"]
    assert all(torch.equal(tensor, weights[name]) for name, tensor in run.module.state_dict().items())
    assert torch.equal(run.probe_batch(size=8, index=3), run.probe_batch(size=8, index=3))
    assert not torch.equal(run.probe_batch(size=8, index=3), run.probe_batch(size=8, index=4))
    (checkpoints / "last.ckpt").rename(checkpoints / "last.moved")
    try:
        assert load(checkpoints.parent).checkpoint_path.name == "step_0000002.ckpt"
    finally:
        (checkpoints / "last.moved").rename(checkpoints / "last.ckpt")


@pytest.mark.parametrize(
    "config, module_class",
    [
        ("prev_token_digits", "PrevTokenDigitsModule"),
        ("bos_ints_attn_only", "BosIntsModule"),
        ("bos_ints_mlp", "BosIntsModule"),
        ("affine_recurrence", "AffineRecurrenceModule"),
    ],
)
def test_load_a_checkpoint_of_each_config(config, module_class):
    tiny_fit(config, "--trainer.max_steps=1", "--checkpoint.every_n_train_steps=1", "--trainer.callbacks=[]", *FAST)
    path = Path("lightning_logs/version_0/checkpoints/last.ckpt")
    run = load(path)
    assert type(run.module).__name__ == module_class and not run.snapshots and run.head_scores().empty
    weights = load_checkpoint(path)["state_dict"]
    assert all(torch.equal(tensor, weights[name]) for name, tensor in run.module.state_dict().items())
    batch = run.probe_batch(size=4)
    assert run.module.model_input(batch).shape[:2] == (4, run.model.cfg.n_ctx)
    assert torch.isfinite(run.module.loss(run.model(run.module.model_input(batch)), batch))


def test_load_refuses_with_one_line(tmp_path):
    (tmp_path / "lightning_logs/version_3/checkpoints").mkdir(parents=True)
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    cases = {
        tmp_path / "missing": "does not exist",
        tmp_path / "lightning_logs": "pass one of its runs, e.g. ",
        tmp_path / "lightning_logs/version_3": "has no checkpoints",
        tmp_path / "notes.ckpt": f"checkpoint {tmp_path / 'notes.ckpt'} ",
    }
    for path, message in cases.items():
        with pytest.raises(ConfigError, match=re.escape(message)) as error:
            load(path)
        assert "\n" not in str(error.value)


class PreviousTokenTask:
    """The least a task needs for the ablation functions: inputs, targets and a loss."""

    class hparams:
        first_target_pos = 1

    def model_input(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens

    def targets(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, :-1]

    def loss(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits[:, 1:].flatten(0, 1), self.targets(tokens).flatten())


def test_analysis_functions_work_on_a_plain_hooked_transformer():
    n_ctx = 8
    shape = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_vocab": 12}
    model = HookedTransformer(HookedTransformerConfig(n_ctx=n_ctx, attn_only=True, **shape))
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_Q.zero_()  # every query 0: each head attends uniformly to the keys it may see
        model.blocks[0].attn.W_O[1].zero_()  # L0H1 writes nothing
    shift = torch.diag(torch.ones(n_ctx - 1), -1)
    shift[0, 0] = 1.0

    def previous_token_head(pattern, hook):
        pattern[:, 0] = shift  # L1H0 attends exactly to the previous token
        return pattern

    tokens = torch.randint(0, 12, (16, n_ctx))
    with model.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern", previous_token_head)]):
        _, cache = model.run_with_cache(tokens)
    patterns = mean_attention_patterns(cache, model.cfg.n_layers)
    uniform = sum(1 / (query + 1) for query in range(1, n_ctx)) / (n_ctx - 1)  # weight on any one visible key
    expected = torch.tensor([[uniform, uniform], [1.0, uniform]])
    torch.testing.assert_close(previous_token_scores(patterns), expected)
    torch.testing.assert_close(bos_scores(patterns), torch.tensor([[uniform, uniform], [1 / (n_ctx - 1), uniform]]))
    by_hand = model.W_E @ model.blocks[1].attn.W_V[0] @ model.blocks[1].attn.W_O[0] @ model.W_U
    torch.testing.assert_close(full_ov_circuits(model)[1, 0], by_hand)
    task = PreviousTokenTask()
    clean = task.loss(model(tokens), tokens).item()
    for mode in ("zero", "mean"):
        losses = head_ablation_losses(model, task, tokens, mode)
        assert losses.shape == (2, 2) and losses[0, 1].item() == pytest.approx(clean, rel=1e-6)
        assert losses[0, 0].item() != pytest.approx(clean, rel=1e-3)


def test_top_k_ranks_the_targets_among_the_model_s_own_logits(run_root):
    run = load(run_root / "lightning_logs/version_0")
    tokens = run.probe_batch(4)
    predictions = run.top_k(tokens, k=3)
    with torch.no_grad():
        logits = run.model(run.module.model_input(tokens))
    assert predictions.tokens.shape == (4, tokens.shape[1], 3)
    torch.testing.assert_close(predictions.tokens, logits.topk(3, dim=-1).indices)
    torch.testing.assert_close(predictions.probs, logits.softmax(-1).topk(3, dim=-1).values)
    first = run.module.hparams.first_target_pos
    assert predictions.target_rank[:, :first].isnan().all()
    targets = run.module.targets(tokens)  # position first + i predicts targets[:, i]
    target_logits = logits[:, first:].gather(-1, targets[..., None])
    ranks = (logits[:, first:] > target_logits).sum(-1).float()
    torch.testing.assert_close(predictions.target_rank[:, first:], ranks)
    assert "top 0:" in predictions.format(0, tokens)
    one = run.top_k(tokens[0], k=2)  # one sequence, [pos]
    torch.testing.assert_close(one.tokens[0], predictions.tokens[0, :, :2])
    with pytest.raises(ConfigError, match="token ids"):
        run.top_k(torch.rand(2, 5))


def test_edited_losses_zeroing_the_only_head_equals_its_zero_ablation(run_root):
    from lit_interp.analysis.interventions import LowRankIdentityQK, ZeroHeadOutput

    run = load(run_root / "lightning_logs/version_0")
    batch = run.probe_batch(16)
    losses = run.edited_losses(
        {"clean": [], "zeroed": [ZeroHeadOutput(0, 0)], "qk identity": [LowRankIdentityQK(0, 0)]}, batch
    )
    clean = run.module.loss(run.model(run.module.model_input(batch)), batch).item()
    assert losses["clean"] == pytest.approx(clean, rel=1e-4)
    zeroed = head_ablation_losses(run.model, run.module, batch, "zero")[0, 0].item()
    assert losses["zeroed"] == pytest.approx(zeroed, rel=1e-4) and losses["zeroed"] != pytest.approx(clean, rel=1e-3)
    assert math.isfinite(losses["qk identity"]) and losses["qk identity"] != pytest.approx(clean, rel=1e-4)
    assert run.edited_losses({"clean": []})["clean"] == pytest.approx(
        run.module.loss(run.model(run.module.model_input(run.probe_batch())), run.probe_batch()).item(), rel=1e-4
    )
