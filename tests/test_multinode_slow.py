"""Multi-node DDP on one machine: `--trainer.num_nodes=2 --trainer.devices=1` as two processes on 127.0.0.1 with
MASTER_ADDR, MASTER_PORT, NODE_RANK and WORLD_SIZE set as a cluster sets them, the analysis callbacks on; a run that
finishes, resumes, and ends where a straight run ends."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, QUIET, TINY

pytestmark = pytest.mark.slow

FIT = [
    sys.executable,
    "-m",
    "lit_interp",
    "fit",
    "--config",
    str(CONFIGS / "prev_token_digits.yaml"),
    *TINY["prev_token_digits"],
    "--trainer.accelerator=cpu",
    "--trainer.strategy=ddp",
    "--trainer.num_nodes=2",
    "--trainer.devices=1",
    "--checkpoint.every_n_train_steps=3",
    "--trainer.callbacks.init_args.probe_batch_size=16",
    *QUIET,
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def two_nodes(directories: list[Path], *args: str) -> None:
    """Node 0 and node 1, each started in its directory (the same one: a shared filesystem), both finishing."""
    port = str(free_port())
    nodes = []
    for node, directory in enumerate(directories):
        directory.mkdir(parents=True, exist_ok=True)
        cluster = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "NODE_RANK": str(node), "WORLD_SIZE": "2"}
        env = {**os.environ, **cluster, "OMP_NUM_THREADS": "1"}
        nodes.append(
            subprocess.Popen(
                [*FIT, *args], cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outputs = [node.communicate(timeout=900) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-3000:] for _, err in outputs]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


def test_two_nodes_train_with_the_analysis_on_and_resume_exactly(tmp_path):
    shared, own = tmp_path / "shared", tmp_path / "node1"
    two_nodes([shared, own], "--trainer.max_steps=6")  # node 1 in a directory of its own: nothing lands there
    assert list(own.iterdir()) == []
    run = shared / "lightning_logs" / "version_0"
    assert [p.name for p in (shared / "lightning_logs").iterdir()] == ["version_0"]
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert (checkpoint["global_step"], checkpoint["lit_interp"]["world_size"]) == (6, 2)
    assert (run / "analysis" / "step_0000006.json").is_file() and not (run / "analysis" / "errors.log").exists()

    two_nodes([shared, shared], "--trainer.max_steps=9", "--ckpt_path", "last")  # resuming needs the checkpoint
    assert [p.name for p in (shared / "lightning_logs").iterdir()] == ["version_0"]  # continued in place
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 9
    assert (run / "analysis" / "step_0000009.json").is_file() and not (run / "analysis" / "errors.log").exists()

    straight = tmp_path / "straight"
    two_nodes([straight, straight], "--trainer.max_steps=9")
    expected = weights(straight / "lightning_logs" / "version_0")
    for name, tensor in weights(run).items():
        assert torch.equal(tensor, expected[name]), name
