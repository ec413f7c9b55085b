"""Slow fault runs in real processes: kill -9 at random moments, Ctrl-C, and DDP with the analysis on."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, QUIET, TINY
from test_runs import scalars

pytestmark = pytest.mark.slow

FIT = [
    sys.executable,
    "-m",
    "lit_interp",
    "fit",
    "--config",
    str(CONFIGS / "bos_ints_attn_only.yaml"),
    *TINY["bos_ints_attn_only"],
    *QUIET,
    "--trainer.accelerator=cpu",
    "--trainer.val_check_interval=5",
    "--checkpoint.every_n_train_steps=5",
    "--trainer.log_every_n_steps=1",
    "--trainer.callbacks.init_args.probe_batch_size=16",
    "--trainer.callbacks.init_args.log_spaced=10",
]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints/last.ckpt", weights_only=False)["state_dict"]


def snapshots(run: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((run / "analysis").glob("step_*.json"))}


def test_kill_9_at_random_moments_then_resume_equals_the_uninterrupted_run(tmp_path):
    args = [*FIT, "--trainer.max_steps=300"]
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    straight_dir.mkdir(), killed_dir.mkdir()
    subprocess.run(args, cwd=straight_dir, check=True, capture_output=True, timeout=600)
    run = killed_dir / "lightning_logs/version_0"
    last = run / "checkpoints/last.ckpt"
    moments, kills = random.Random(0), 0
    while kills < 5:
        before = last.stat().st_mtime_ns if last.exists() else 0
        resume = ["--ckpt_path", "last"] if before else []
        process = subprocess.Popen(
            [*args, *resume], cwd=killed_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 300
        while (
            process.poll() is None
            and time.monotonic() < deadline
            and (not last.exists() or last.stat().st_mtime_ns == before)
        ):
            time.sleep(0.05)  # wait for a new checkpoint, so that every kill loses work after it
        time.sleep(moments.uniform(0.0, 1.5))
        if process.poll() is not None:
            break  # finished before the kill
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
    result = subprocess.run([*args, "--ckpt_path", "last"], cwd=killed_dir, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert kills >= 3, f"only {kills} kills landed before the run finished"
    straight = straight_dir / "lightning_logs/version_0"
    assert not (killed_dir / "lightning_logs/version_1").exists()
    for name, tensor in weights(straight).items():
        assert torch.equal(tensor, weights(run)[name]), name
    assert snapshots(run) == snapshots(straight)
    expected, got = scalars(straight), scalars(run)
    assert set(got) == set(expected)
    for tag, values in expected.items():
        assert [step for step, _ in got[tag]] == [step for step, _ in values], tag
        assert [value for _, value in got[tag]] == pytest.approx(
            [value for _, value in values], rel=1e-5, nan_ok=True
        ), tag


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(tmp_path):
    args = [*FIT, "--trainer.callbacks=[]"]
    process = subprocess.Popen([*args, "--trainer.max_steps=100000"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("lightning_logs/version_0/checkpoints/step_*.ckpt")) and time.monotonic() < deadline:
        time.sleep(0.1)  # training has started: Ctrl-C now lands between steps, not during imports
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert (
        stderr.strip().splitlines()[-1]
        == "lit_interp: interrupted; a resumable last.ckpt was written: continue with --ckpt_path last"
    )
    run = tmp_path / "lightning_logs/version_0"
    step = torch.load(run / "checkpoints/last.ckpt", weights_only=False)["global_step"]
    assert step > 0
    subprocess.run(
        [*args, f"--trainer.max_steps={step + 7}", "--ckpt_path", "last"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=600,
    )
    straight = tmp_path / "straight"
    straight.mkdir()
    subprocess.run(
        [*args, f"--trainer.max_steps={step + 7}"], cwd=straight, check=True, capture_output=True, timeout=600
    )
    for name, tensor in weights(straight / "lightning_logs/version_0").items():
        assert torch.equal(tensor, weights(run)[name]), name


def test_ddp_with_the_analysis_on_then_resume_refuses_another_device_count(tmp_path):
    common = [
        sys.executable,
        "-m",
        "lit_interp",
        "fit",
        "--config",
        str(CONFIGS / "prev_token_digits.yaml"),
        *TINY["prev_token_digits"],
        "--trainer.accelerator=cpu",
        "--checkpoint.every_n_train_steps=3",
        "--trainer.callbacks.init_args.probe_batch_size=16",
        *QUIET,
    ]
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2"]
    result = subprocess.run(
        [*common, *ddp, "--trainer.max_steps=6"], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "lightning_logs/version_0"
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 6
    assert (run / "analysis/step_0000006.json").is_file() and not (run / "analysis/errors.log").exists()
    result = subprocess.run(
        [*common, "--trainer.devices=1", "--trainer.max_steps=9", "--ckpt_path", "last"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    error = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(error) == 1, result.stderr[-2000:]
    assert "values that change what it trained" in error[0] and "trainer.devices" in error[0], error
    result = subprocess.run(
        [*common, *ddp, "--trainer.max_steps=9", "--ckpt_path", "last"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 9
    assert not (tmp_path / "lightning_logs/version_1").exists()
