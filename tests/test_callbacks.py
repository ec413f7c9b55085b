"""AnalysisSnapshots: snapshot files, TensorBoard logs, resume, and training left bit-identical."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import CONFIGS, TINY
from lightning.pytorch.callbacks import TQDMProgressBar
from safetensors.torch import load_file

import lit_interp.analysis.snapshot as snapshot_module
import lit_interp.loggers as loggers_module
from lit_interp.callbacks import AnalysisSnapshots, ThrottledProgressBar
from lit_interp.checkpoints import StepCheckpoint
from lit_interp.cli import main
from lit_interp.commands.train import run_cli
from lit_interp.tasks.bos_ints import BosIntsDataModule, BosIntsModule

CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))


def fit(
    tmp_path: Path, max_steps: int, callbacks: list, ckpt_path: str | None = None, every: int = 5
) -> tuple[pl.Trainer, BosIntsModule]:
    pl.seed_everything(0)
    module = BosIntsModule(d_model=16, d_head=16)
    datamodule = BosIntsDataModule(batch_size=16, val_batches=1, val_batch_size=16)
    checkpoint = StepCheckpoint(
        every_n_train_steps=every,
        save_top_k=-1,
        save_last=True,
        filename="step_{step:07d}",
        auto_insert_metric_name=False,
    )
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_steps=max_steps,
        callbacks=[*callbacks, checkpoint],
        deterministic=True,
        val_check_interval=every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=pl.loggers.TensorBoardLogger(tmp_path, name="lightning_logs", version=0),
    )
    trainer.fit(module, datamodule, ckpt_path=ckpt_path)
    return trainer, module


@pytest.fixture
def counted_analysis(monkeypatch):
    """Records the step of every run_analysis call the callback makes."""
    steps = []
    real = snapshot_module.run_analysis

    def counting(module, datamodule, step, **kwargs):
        steps.append(step)
        return real(module, datamodule, step, **kwargs)

    monkeypatch.setattr(snapshot_module, "run_analysis", counting)
    return steps


def test_snapshots_at_checkpoints_and_end(tmp_path, counted_analysis):
    fit(tmp_path, max_steps=12, callbacks=[AnalysisSnapshots(probe_batch_size=32)])
    analysis = tmp_path / "lightning_logs/version_0/analysis"
    assert sorted(p.name for p in analysis.iterdir()) == [
        f"step_{s:07d}.{suffix}" for s in (5, 10, 12) for suffix in ("json", "safetensors")
    ]
    assert counted_analysis == [5, 10, 12]
    summary = json.loads((analysis / "step_0000010.json").read_text())
    assert summary["step"] == 10 and summary["task"] == "BosIntsModule"
    assert set(summary["heads"]) == {"L0H0", "L1H0"} and "hooks" in summary and "adversarial" in summary
    assert math.log(99) < summary["loss"] < math.log(101) + 0.5  # barely trained: near uniform over 100 tokens
    assert 0 <= summary["heads"]["L1H0"]["prev_token_score"] <= 1
    tensors = load_file(analysis / "step_0000010.safetensors")
    assert tensors["attention_patterns"].shape == (2, 1, 10, 10)
    assert torch.allclose(tensors["attention_patterns"].sum(-1), torch.ones(2, 1, 10))
    assert tensors["ov_circuit.L1H0"].shape == (101, 101)


def test_tensorboard_scalars_and_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(tmp_path, max_steps=10, callbacks=[AnalysisSnapshots(probe_batch_size=32)])
    events = EventAccumulator(
        str(tmp_path / "lightning_logs/version_0"), size_guidance={"images": 0, "scalars": 0}
    ).Reload()
    scalars, images = events.Tags()["scalars"], events.Tags()["images"]
    assert {
        "analysis/loss",
        "analysis/prev_token_score/L1H0",
        "analysis/zero_ablation_loss/L0H0",
        "analysis/mean_ablation_loss/L1H0",
    } <= set(scalars)
    assert "analysis/hook_mean_ablation_loss/hook_embed" in scalars
    assert [event.step for event in events.Scalars("analysis/loss")] == [5, 10]
    assert {"analysis/attention_pattern/L0", "analysis/attention_pattern/L1", "analysis/ov_circuit/L1H0"} <= set(images)
    assert events.Images("analysis/attention_pattern/L1")[0].width > 100


def test_training_is_bit_identical_with_and_without_analysis(tmp_path):
    _, plain = fit(tmp_path / "plain", max_steps=12, callbacks=[], every=3)
    _, analyzed = fit(tmp_path / "analyzed", max_steps=12, callbacks=[AnalysisSnapshots(probe_batch_size=32)], every=3)
    assert len(list((tmp_path / "analyzed/lightning_logs/version_0/analysis").glob("*.json"))) == 4
    for name, tensor in plain.state_dict().items():
        assert torch.equal(tensor, analyzed.state_dict()[name]), name


def test_resume_neither_repeats_nor_loses_a_snapshot(tmp_path, counted_analysis):
    fit(tmp_path, max_steps=12, callbacks=[AnalysisSnapshots(probe_batch_size=32)])
    analysis = tmp_path / "lightning_logs/version_0/analysis"
    written = {p.name: p.stat().st_mtime_ns for p in analysis.iterdir()}
    # Resume from step 5 (as after a crash) and train further: 10 and 12 exist, 15 and 17 are new.
    fit(
        tmp_path,
        max_steps=17,
        callbacks=[AnalysisSnapshots(probe_batch_size=32)],
        ckpt_path=str(tmp_path / "lightning_logs/version_0/checkpoints/step_0000005.ckpt"),
    )
    assert counted_analysis == [5, 10, 12, 15, 17]
    steps = sorted(int(p.stem.split("_")[1]) for p in analysis.glob("*.json"))
    assert steps == [5, 10, 12, 15, 17]
    assert all(analysis.joinpath(name).stat().st_mtime_ns == mtime for name, mtime in written.items())


def test_sweep_and_images_every_k_snapshots_and_at_the_end(tmp_path, counted_analysis, monkeypatch):
    image_steps = []
    monkeypatch.setattr(loggers_module, "log_images", lambda loggers, images, step: image_steps.append(step))
    snapshots = AnalysisSnapshots(
        every_n_train_steps=2, probe_batch_size=16, hook_mean_ablation_every_n_snapshots=2, images_every_n_snapshots=2
    )
    fit(tmp_path, max_steps=7, callbacks=[snapshots])
    analysis = tmp_path / "lightning_logs/version_0/analysis"
    assert counted_analysis == [2, 4, 6, 7]
    swept = [step for step in (2, 4, 6, 7) if "hooks" in json.loads((analysis / f"step_{step:07d}.json").read_text())]
    assert swept == [4, 7] and image_steps == [4, 7]  # every 2nd snapshot, and the last one is always complete


@pytest.mark.parametrize("config", CONFIG_FILES, ids=[c.stem for c in CONFIG_FILES])
def test_every_config_writes_snapshots(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            str(config),
            "--trainer.max_steps=2",
            "--checkpoint.every_n_train_steps=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.num_sanity_val_steps=0",
            "--data.init_args.val_batch_size=8",
            "--trainer.callbacks.init_args.probe_batch_size=16",
            *TINY[config.stem],
        ]
    )
    analysis = tmp_path / "lightning_logs/version_0/analysis"
    assert sorted(p.name for p in analysis.glob("*.json")) == ["step_0000001.json", "step_0000002.json"]
    summary = json.loads((analysis / "step_0000002.json").read_text())
    assert summary["step"] == 2 and math.isfinite(summary["loss"]) and summary["heads"]
    assert not (analysis / "errors.log").exists(), (analysis / "errors.log").read_text()[-3000:]


def test_progress_bar_redraws_at_most_every_interval_and_at_the_end():
    bar = ThrottledProgressBar(min_interval_s=3600)
    assert [bar._should_update(n, 100) for n in (1, 2, 3, 99, 100)] == [True, False, False, False, True]
    assert all(ThrottledProgressBar(min_interval_s=0)._should_update(n, 100) for n in (1, 2, 3))


def test_cli_uses_the_throttled_bar_unless_the_bar_is_off_or_given():
    base = ["fit", "--trainer.fast_dev_run=1", "--trainer.callbacks=[]", *TINY["prev_token_digits"]]
    assert type(run_cli(base).trainer.progress_bar_callback) is ThrottledProgressBar
    assert run_cli([*base, "--trainer.enable_progress_bar=false"]).trainer.progress_bar_callback is None
    given = run_cli(
        [*base, "--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar"]
    ).trainer.progress_bar_callback
    assert type(given) is TQDMProgressBar
