"""Runs that never hang, crash, lose or mix work: run directories, locks, loggers, guards, atomic writes, resumes."""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, QUIET, tiny_fit
from lightning.pytorch.callbacks import Callback

from lit_interp.callbacks import snapshot_steps
from lit_interp.checkpoints import AtomicCheckpointIO, CheckpointWriteError
from lit_interp.cli import main, run_cli
from lit_interp.runlogs import read_csv_metrics

NO_ANALYSIS = ["--trainer.callbacks=[]"]


def scalars(run: Path, prefix: str = "") -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
        if tag.startswith(prefix)
    }


def csv_rows(run: Path) -> list[tuple[int, tuple[str, ...]]]:
    """Every row of metrics.csv as (step, the columns it fills): a duplicated or lost row shows."""
    with open(run / "metrics.csv", newline="") as file:
        return sorted((int(row["step"]), tuple(sorted(k for k, v in row.items() if v))) for row in csv.DictReader(file))


def test_log_spaced_schedule_is_dense_early():
    steps = snapshot_steps(200, 0, 20)
    assert steps[:6] == [1, 2, 3, 4, 5, 6] and steps[-1] == 200 and len(steps) == 20
    assert len(steps) >= 15 and sum(step < 50 for step in steps) > len(steps) / 2
    assert snapshot_steps(10, 5, 0) == [5, 10]
    assert snapshot_steps(12, 5, 0) == [5, 10, 12]  # the end of training is always a snapshot


def test_default_root_dir_holds_the_run_and_last_finds_its_own_task(tmp_path, monkeypatch):
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    root = tmp_path / "runs"
    common = [*NO_ANALYSIS, f"--trainer.default_root_dir={root}", "--checkpoint.every_n_train_steps=2"]
    tiny_fit("prev_token_digits", "--trainer.max_steps=2", *common)
    tiny_fit("bos_ints_attn_only", "--trainer.max_steps=2", *common)  # a newer run of another task
    tiny_fit("prev_token_digits", "--trainer.max_steps=4", "--ckpt_path", "last", *common)
    assert not Path("lightning_logs").exists(), "nothing lands in the working directory"
    runs = root / "lightning_logs"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_1"]
    assert torch.load(runs / "version_0/checkpoints/last.ckpt", weights_only=False)["global_step"] == 4
    assert (runs / "version_0/final_metrics.json").is_file()


def test_validate_and_test_need_only_the_checkpoint():
    tiny_fit("bos_ints_attn_only", "--trainer.max_steps=2", "--checkpoint.every_n_train_steps=2", *NO_ANALYSIS)
    cli = run_cli(["validate", "--ckpt_path", "lightning_logs/version_0/checkpoints/last.ckpt", *QUIET])
    assert type(cli.model).__name__ == "BosIntsModule" and cli.model.hparams.d_model == 16
    assert 0 <= float(cli.trainer.callback_metrics["val/acc"]) <= 1


def test_config_interpolation_trains(tmp_path):
    config = tmp_path / "interpolated.yaml"
    text = (CONFIGS / "bos_ints_attn_only.yaml").read_text().replace("d_model: 128", "d_model: 16")
    config.write_text(text.replace("d_head: 128", "d_head: ${model.init_args.d_model}"))  # interpolated within the file
    cli = run_cli(["fit", "--config", str(config), "--trainer.max_steps=1", *NO_ANALYSIS, *QUIET])
    assert cli.model.model.cfg.d_head == 16 and cli.trainer.global_step == 1


TENSORBOARD_AND_CSV = (
    '[{"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": "."}},'
    ' {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "."}}]'
)


def test_csv_and_tensorboard_loggers_both_receive_the_analysis():
    tiny_fit(
        "bos_ints_attn_only",
        "--trainer.max_steps=4",
        "--trainer.log_every_n_steps=2",
        f"--trainer.logger={TENSORBOARD_AND_CSV}",
        "--trainer.callbacks.init_args.probe_batch_size=16",
        "--trainer.callbacks.init_args.log_spaced=0",
        "--trainer.callbacks.init_args.every_n_train_steps=2",
    )
    run = Path("lightning_logs/version_0")
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"analysis/prev_token_score/L1H0", "analysis/loss", "dynamics/grad_norm/blocks.0", "lr-AdamW"} <= set(header)
    logged = scalars(run)
    assert [step for step, _ in logged["analysis/prev_token_score/L1H0"]] == [2, 4]
    assert {
        "dynamics/param_norm/blocks.1",
        "dynamics/distance_from_init/embed",
        "dynamics/attention_entropy/L0H0",
    } <= set(logged)
    entropy = logged["dynamics/attention_entropy/L0H0"][0][1]
    assert 0 < entropy < torch.log(torch.tensor(10.0)).item()  # between one key and uniform over ten


def test_mlflow_file_store_receives_the_analysis(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="MLflow is an optional extra: pip install -e .[mlflow]")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
    store = tmp_path / "mlruns"
    logger = (
        f'{{"class_path": "lightning.pytorch.loggers.MLFlowLogger", "init_args": {{"tracking_uri": "file:{store}"}}}}'
    )
    tiny_fit(
        "bos_ints_attn_only",
        "--trainer.max_steps=2",
        f"--trainer.logger={logger}",
        "--trainer.callbacks.init_args.probe_batch_size=16",
    )
    metric_files = {p.name for p in store.rglob("metrics/*")} | {
        p.parent.name + "/" + p.name for p in store.rglob("metrics/*/*")
    }
    assert any("prev_token_score" in name for name in metric_files), sorted(metric_files)[:20]


def test_wandb_offline_receives_the_analysis(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="Weights & Biases is an optional extra: pip install -e .[wandb]")
    monkeypatch.setenv("WANDB_MODE", "offline")
    init_args = f'{{"save_dir": "{tmp_path}", "offline": true}}'
    logger = f'{{"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": {init_args}}}'
    tiny_fit(
        "bos_ints_attn_only",
        "--trainer.max_steps=2",
        f"--trainer.logger={logger}",
        "--trainer.callbacks.init_args.probe_batch_size=16",
    )
    wandb.finish()
    # The offline run keeps its images as files (its scalars go into a binary log that wandb-core writes lazily).
    images = {p.parent.name for p in tmp_path.rglob("media/images/analysis/*/*.png")}
    assert {"attention_pattern", "ov_circuit"} <= images, images


def test_analysis_failure_is_logged_and_training_goes_on(monkeypatch):
    import lit_interp.analysis.snapshot as snapshot_module

    def broken(*args, **kwargs):
        raise RuntimeError("analysis bug")

    monkeypatch.setattr(snapshot_module, "run_analysis", broken)
    with pytest.warns(UserWarning, match="analysis failed at step 1"):
        tiny_fit("bos_ints_attn_only", "--trainer.max_steps=3")
    run = Path("lightning_logs/version_0")
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 3
    errors = (run / "analysis/errors.log").read_text()
    assert [line for line in errors.splitlines() if line.startswith("step ")] == [
        f"step {s}: RuntimeError: analysis bug" for s in (1, 2, 3)
    ]
    assert "Traceback" in errors
    assert not list((run / "analysis").glob("step_*")), "no partial snapshot is left"


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(capsys):
    args = [
        "--trainer.max_steps=60",
        "--model.init_args.lr=1e6",
        "--trainer.log_every_n_steps=1",
        "--checkpoint.every_n_train_steps=1",
        *NO_ANALYSIS,
    ]
    with pytest.raises(SystemExit) as exit_info:
        tiny_fit("bos_ints_attn_only", *args)
    assert exit_info.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("lit_interp: error: ") and " at step " in error and "diverged" in error, error
    step = int(error.split(" at step ")[1].split(":")[0])
    checkpoint = torch.load("lightning_logs/version_0/checkpoints/last.ckpt", weights_only=False)
    assert checkpoint["global_step"] < step
    weights = {
        name: tensor for name, tensor in checkpoint["state_dict"].items() if not name.endswith("IGNORE")
    }  # IGNORE is -inf by design
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())


def test_a_second_writer_is_refused_naming_the_first(capsys):
    tiny_fit("prev_token_digits", "--trainer.max_steps=2", "--checkpoint.every_n_train_steps=2", *NO_ANALYSIS)
    run = Path("lightning_logs/version_0")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from lit_interp.rundir import RunLock;"
                f"lock = RunLock(Path('{run}')).acquire(); print('held', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in run.rglob("*"))
        with pytest.raises(SystemExit) as exit_info:
            tiny_fit("prev_token_digits", "--trainer.max_steps=4", "--ckpt_path", "last", *NO_ANALYSIS)
        assert exit_info.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"run directory {run} is in use by process {holder.pid}" in error, error
        assert sorted(p.name for p in run.rglob("*")) == before
    finally:
        holder.kill()
        holder.wait()


def test_new_runs_started_at_once_get_distinct_versions(tmp_path):
    from lit_interp.rundir import create_new_run

    made = [create_new_run(tmp_path / "lightning_logs") for _ in range(3)]
    assert [p.name for p in made] == ["version_0", "version_1", "version_2"]
    code = (
        "import sys; from pathlib import Path; from lit_interp.rundir import create_new_run; "
        "print(create_new_run(Path(sys.argv[1])).name)"
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "race")], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    names = sorted(worker.communicate()[0].strip() for worker in workers)
    assert names == ["version_0", "version_1", "version_2", "version_3"]


def test_a_failed_checkpoint_write_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def full_disk(obj, file, *args, **kwargs):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointWriteError, match="No space left on device"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"], "the partial file is removed"
    assert torch.equal(torch.load(path, weights_only=False)["state_dict"]["w"], torch.ones(3))


def test_a_full_filesystem_gives_one_line_and_a_loadable_last_checkpoint(tmp_path, capsys):
    mount = tmp_path / "small"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mount)], capture_output=True
        ).returncode
    ):
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    try:
        with pytest.raises(SystemExit) as exit_info:
            tiny_fit(
                "bos_ints_attn_only",
                "--trainer.max_steps=400",
                "--checkpoint.every_n_train_steps=1",
                "--checkpoint.save_top_k=-1",
                f"--trainer.default_root_dir={mount}",
                *NO_ANALYSIS,
            )
        assert exit_info.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert (
            error[-1].startswith("lit_interp: error: could not write checkpoint")
            and "No space left on device" in error[-1]
        ), error[-3:]
        checkpoints = mount / "lightning_logs/version_0/checkpoints"
        assert not [p for p in checkpoints.iterdir() if p.name.endswith(".tmp")], "no partial file is left"
        assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] >= 1
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_resuming_on_another_number_of_processes_is_refused(capsys):
    tiny_fit("prev_token_digits", "--trainer.max_steps=2", "--checkpoint.every_n_train_steps=2", *NO_ANALYSIS)
    path = Path("lightning_logs/version_0/checkpoints/last.ckpt")
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["lit_interp"]["world_size"] = 2
    torch.save(checkpoint, path)
    with pytest.raises(SystemExit):
        tiny_fit("prev_token_digits", "--trainer.max_steps=4", "--ckpt_path", "last", *NO_ANALYSIS)
    assert "trained on 2 process(es) and this run has 1" in capsys.readouterr().err


def test_a_checkpoint_declaring_a_huge_model_is_refused_before_anything_is_built(capsys):
    tiny_fit("prev_token_digits", "--trainer.max_steps=2", "--checkpoint.every_n_train_steps=2", *NO_ANALYSIS)
    checkpoint = torch.load("lightning_logs/version_0/checkpoints/last.ckpt", weights_only=False)
    checkpoint["hyper_parameters"]["d_model"] = 2**40
    torch.save(checkpoint, "huge.ckpt")
    for command in (
        ["validate", "--ckpt_path", "huge.ckpt", *QUIET],
        ["analyze", "--ckpt_path", "huge.ckpt", "--out", "out"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(command)
        assert exit_info.value.code == 2
        assert "d_model=1099511627776" in capsys.readouterr().err
    assert not Path("out").exists()


class CrashAfter(Callback):
    """Dies at the end of step `step`, like a kill: before its validation, checkpoint and logs."""

    def __init__(self, step: int = 9):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise ProcessKilled(f"killed at step {self.step}")


class ProcessKilled(Exception):
    pass


def test_tensorboard_of_a_resumed_run_equals_the_uninterrupted_one(tmp_path, monkeypatch):
    """Killed after step 9 with the last checkpoint at step 6: the resumed run's logs are the straight run's."""
    args = [
        "--trainer.val_check_interval=3",
        "--checkpoint.every_n_train_steps=3",
        "--trainer.log_every_n_steps=1",
        "--trainer.callbacks.init_args.probe_batch_size=16",
        "--trainer.callbacks.init_args.log_spaced=6",
        "--trainer.max_steps=12",
        f"--trainer.logger={TENSORBOARD_AND_CSV}",
    ]
    for name in ("straight", "killed"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "straight")
    tiny_fit("bos_ints_attn_only", *args)
    straight = scalars(Path("lightning_logs/version_0"))
    straight_csv = read_csv_metrics(Path("lightning_logs/version_0"))
    straight_rows = csv_rows(Path("lightning_logs/version_0"))
    monkeypatch.chdir(tmp_path / "killed")
    with pytest.raises(ProcessKilled):
        tiny_fit("bos_ints_attn_only", *args, "--trainer.callbacks+=test_runs.CrashAfter")
    run = Path("lightning_logs/version_0")
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 6
    assert (run / "analysis/step_0000007.json").exists(), "a snapshot after the checkpoint was written before the kill"
    time.sleep(1.1)  # a new event file name (its timestamp has a one-second resolution)
    tiny_fit("bos_ints_attn_only", *args, "--ckpt_path", "last")
    resumed = scalars(run)
    assert set(resumed) == set(straight)
    for tag, values in straight.items():
        assert [step for step, _ in resumed[tag]] == [step for step, _ in values], tag
        assert [value for _, value in resumed[tag]] == pytest.approx(
            [value for _, value in values], rel=1e-5, nan_ok=True
        ), tag
    assert json.loads((run / "final_metrics.json").read_text())["step"] == 12
    resumed_csv = read_csv_metrics(run)  # Lightning's CSVLogger alone would have deleted the killed run's rows
    assert csv_rows(run) == straight_rows
    assert set(resumed_csv) == set(straight_csv)
    for tag, (steps, values) in straight_csv.items():
        assert resumed_csv[tag][0] == steps, tag
        assert resumed_csv[tag][1] == pytest.approx(values, rel=1e-5, nan_ok=True), tag
    # The final checkpoint is written after everything the run logs, so a kill right after it loses
    # nothing, and resuming from it (a finished run) leaves the logs as they are.
    summary = (run / "final_metrics.json").stat().st_mtime_ns
    assert (run / "checkpoints/last.ckpt").stat().st_mtime_ns >= summary
    time.sleep(1.1)
    tiny_fit("bos_ints_attn_only", *args, "--ckpt_path", "last")
    # json: a score refused on this input (NaN) equals itself
    assert json.dumps(scalars(run), sort_keys=True) == json.dumps(resumed, sort_keys=True)
    assert csv_rows(run) == straight_rows
    assert (run / "final_metrics.json").stat().st_mtime_ns == summary
