"""Every private hook of a library that lit_interp overrides is still called, and every private attribute it reads
still means what it relies on: each test here fails if Lightning, torch or Optuna stop doing so."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, TINY, tiny_fit
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lit_interp.callbacks import ThrottledProgressBar
from lit_interp.checkpoints import StepCheckpoint
from lit_interp.commands.train import LitInterpCLI
from lit_interp.tasks.base import TaskModule

NO_ANALYSIS = ["--trainer.callbacks=[]"]


def counting(monkeypatch, owner: type, name: str) -> list:
    """Replace `owner.name` by a wrapper that records each call and calls the original."""
    original = getattr(owner, name)
    calls: list = []

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


def test_lightning_calls_the_progress_bars_should_update(monkeypatch):
    from lit_interp.cli import main

    calls = counting(monkeypatch, ThrottledProgressBar, "_should_update")
    main(["fit", "--config", str(CONFIGS / "prev_token_digits.yaml"), *TINY["prev_token_digits"], *NO_ANALYSIS])
    assert len(calls) >= 200  # the bar is on by default: asked at every one of the config's 200 steps


def test_lightning_calls_step_checkpoints_save_checkpoint_after_flushing_the_loggers(monkeypatch):
    saved = counting(monkeypatch, StepCheckpoint, "_save_checkpoint")
    tiny_fit("prev_token_digits", "--trainer.max_steps=4", "--checkpoint.every_n_train_steps=2", *NO_ANALYSIS)
    names = sorted(Path(args[2]).name for args in saved)
    assert names == ["last.ckpt", "last.ckpt", "step_0000002.ckpt", "step_0000004.ckpt"]


def test_torch_calls_task_modules_apply_when_the_module_moves(monkeypatch):
    from lit_interp.tasks.prev_token_digits import PrevTokenDigitsModule

    module = PrevTokenDigitsModule(d_model=16)
    module.model.cfg.device = "elsewhere"
    calls = counting(monkeypatch, TaskModule, "_apply")
    module.to(torch.device("cpu"))
    assert calls and module.model.cfg.device == "cpu"  # the residual stream follows the weights' device


def test_lightning_cli_calls_our_parse_ckpt_path(monkeypatch, tmp_path):
    tiny_fit("prev_token_digits", "--trainer.max_steps=2", *NO_ANALYSIS)
    calls = counting(monkeypatch, LitInterpCLI, "_parse_ckpt_path")
    from lit_interp.cli import main

    main(["validate", "--ckpt_path", "lightning_logs/version_0/checkpoints/last.ckpt", "--trainer.logger=false"])
    assert len(calls) == 1


def test_accumulated_batches_snapshot_only_at_optimizer_steps():
    """`fit_loop._should_accumulate()` tells the snapshot callback a batch did not step the optimizer."""
    snapshots = '--trainer.callbacks=[{"class_path": "lit_interp.callbacks.AnalysisSnapshots", "init_args": '
    snapshots += '{"every_n_train_steps": 2, "probe_batch_size": 4, "hook_mean_ablation": false, "log_images": false}}]'
    tiny_fit("prev_token_digits", "--trainer.max_steps=4", "--trainer.accumulate_grad_batches=2", snapshots)
    run = Path("lightning_logs/version_0")
    assert sorted(path.name for path in (run / "analysis").glob("*.json")) == ["step_0000002.json", "step_0000004.json"]
    assert not (run / "analysis" / "errors.log").exists()
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 4


def test_model_checkpoint_keeps_every_n_train_steps_where_lit_interp_reads_it():
    assert StepCheckpoint(every_n_train_steps=7)._every_n_train_steps == 7
    assert ModelCheckpoint()._every_n_train_steps == 0


def test_model_checkpoints_private_save_methods_keep_their_signatures():
    """StepCheckpoint calls these itself (a save after validation, at the end, on SIGTERM)."""
    expected = {
        "_save_topk_checkpoint": ["self", "trainer", "monitor_candidates"],
        "_save_last_checkpoint": ["self", "trainer", "monitor_candidates"],
        "_monitor_candidates": ["self", "trainer"],
        "_should_skip_saving_checkpoint": ["self", "trainer"],
        "_save_checkpoint": ["self", "trainer", "filepath"],
    }
    for name, parameters in expected.items():
        assert list(inspect.signature(getattr(ModelCheckpoint, name)).parameters) == parameters, name
    assert ModelCheckpoint()._last_global_step_saved == 0


def test_csv_logger_opens_its_experiment_on_first_use(tmp_path):
    """continue_csv_metrics must run before the writer exists (`_experiment` still None)."""
    logger = CSVLogger(tmp_path)
    assert logger._experiment is None
    assert logger.experiment is logger._experiment is not None


def test_optuna_trials_carry_the_storage_id_a_take_over_needs():
    optuna = pytest.importorskip("optuna")
    from lit_interp.optuna_storage import trial_handle

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    asked = study.ask()
    handle = trial_handle(study, asked.number)
    handle.set_user_attr("taken_over", True)
    assert handle._trial_id == asked._trial_id and study.trials[0].user_attrs == {"taken_over": True}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_smoke_fit_in_bf16():
    tiny_fit("bos_ints_mlp", "--trainer.max_steps=3", "--trainer.accelerator=cuda", "--trainer.devices=1")
    checkpoint = torch.load("lightning_logs/version_0/checkpoints/last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 3
    assert all(
        tensor.dtype == torch.float32 for tensor in checkpoint["state_dict"].values() if tensor.is_floating_point()
    )
