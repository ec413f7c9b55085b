"""`python -m lit_interp analyze`: checkpoint and trajectory reports, and one-line refusals that write nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import inside
from safetensors.torch import load_file

from lit_interp.cli import main

CONFIG = Path(__file__).resolve().parents[1] / "configs/bos_ints_attn_only.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny bos_ints run trained through the CLI: checkpoints and snapshots at steps 3 and 6."""
    root = tmp_path_factory.mktemp("fit")
    with inside(root):
        main(
            [
                "fit",
                "--config",
                str(CONFIG),
                "--trainer.max_steps=6",
                "--checkpoint.every_n_train_steps=3",
                "--trainer.enable_progress_bar=false",
                "--trainer.num_sanity_val_steps=0",
                "--data.init_args.val_batch_size=8",
                "--model.init_args.d_model=16",
                "--model.init_args.d_head=16",
            ]
        )
    return root / "lightning_logs/version_0"


def analyze(args: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of `python -m lit_interp analyze ARGS`, run in-process."""
    try:
        main(["analyze", *args])
        code = 0
    except SystemExit as exit:
        code = exit.code
    return code, capsys.readouterr().err


def test_checkpoint_report(run, tmp_path, capsys):
    out = tmp_path / "report"
    code, _ = analyze(["--ckpt_path", str(run / "checkpoints/step_0000006.ckpt"), "--out", str(out)], capsys)
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["report.html", "summary.json", "tensors.safetensors"]
    summary = json.loads((out / "summary.json").read_text())
    snapshot = json.loads((run / "analysis/step_0000006.json").read_text())
    assert summary["step"] == 6 and set(summary["heads"]) == {"L0H0", "L1H0"}
    # Same weights and the same probe batch as the training snapshot: the same numbers.
    assert summary["loss"] == pytest.approx(snapshot["loss"], rel=1e-5)
    assert summary["heads"]["L1H0"]["prev_token_score"] == pytest.approx(
        snapshot["heads"]["L1H0"]["prev_token_score"], rel=1e-5
    )
    tensors = load_file(out / "tensors.safetensors")
    assert tensors["attention_patterns"].shape == (2, 1, 10, 10) and tensors["ov_circuit.L0H0"].shape == (101, 101)
    page = (out / "report.html").read_text()
    assert page.count('class="figure-spec"') >= 6  # ablations, hook sweep, attention, OV circuits, composition
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)  # nothing fetched: opens offline
    assert "prev_token_score" in page and "L1H0" in page


def test_default_output_dirs(run, capsys):
    code, _ = analyze(
        ["--ckpt_path", str(run / "checkpoints/step_0000003.ckpt"), "--no_hook_mean_ablation", "--probe_batch_size=16"],
        capsys,
    )
    assert code == 0 and (run / "checkpoints/analysis_step_0000003/report.html").is_file()
    assert "hooks" not in json.loads((run / "checkpoints/analysis_step_0000003/summary.json").read_text())
    code, _ = analyze(["--run", str(run)], capsys)
    assert code == 0 and (run / "analysis_report/report.html").is_file()


def test_trajectory_report(run, tmp_path, capsys):
    out = tmp_path / "trajectory"
    code, _ = analyze(["--run", str(run), "--out", str(out)], capsys)
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["report.html", "trajectory.json"]
    data = json.loads((out / "trajectory.json").read_text())
    assert data["steps"] == [1, 2, 3, 4, 6] and len(data["loss"]) == 5  # the config's per-decade snapshots, the end
    assert len(data["heads"]["prev_token_score"]["L1H0"]) == 5 and "hook_embed" in data["hooks"]
    assert (out / "report.html").read_text().count('class="figure-spec"') >= 10


def test_direct_trainer_checkpoint_is_rebuilt_without_cli_class_paths(tmp_path, capsys):
    import lightning.pytorch as pl

    from lit_interp.tasks.prev_token_digits import DigitsDataModule, PrevTokenDigitsModule

    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_steps=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(PrevTokenDigitsModule(d_model=16), DigitsDataModule(batch_size=8))
    trainer.save_checkpoint(tmp_path / "direct.ckpt")
    code, err = analyze(
        ["--ckpt_path", str(tmp_path / "direct.ckpt"), "--probe_batch_size=16", "--no_hook_mean_ablation"], capsys
    )
    assert code == 0, err
    tensors = load_file(tmp_path / "analysis_direct/tensors.safetensors")
    assert any(name.startswith("rotary_similarity.q") for name in tensors) and any(
        name.startswith("rotary_similarity.rot_q") for name in tensors
    )
    assert "Cosine similarity across positions" in (tmp_path / "analysis_direct/report.html").read_text()


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def bad_checkpoints(tmp_path: Path, run: Path) -> dict[str, tuple[Path, str]]:
    good = (run / "checkpoints/step_0000003.ckpt").read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(good[: len(good) // 2])
    (tmp_path / "notes.ckpt").write_text("not a checkpoint\n")
    torch.save({"state_dict": {}, "hyper_parameters": {}}, tmp_path / "foreign.ckpt")
    torch.save(
        {"state_dict": {}, "lit_interp": {"module_class": "os.system"}, "hyper_parameters": {}},
        tmp_path / "named_os.ckpt",
    )
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Payload(tmp_path / "pwned")}, tmp_path / "malicious.ckpt")
    return {
        "missing": (tmp_path / "absent.ckpt", "does not exist"),
        "truncated": (tmp_path / "truncated.ckpt", "truncated"),
        "not torch": (tmp_path / "notes.ckpt", ""),  # torch reads text as a legacy pickle: refused either way
        "foreign": (tmp_path / "foreign.ckpt", "not written by lit_interp"),
        "names os.system": (tmp_path / "named_os.ckpt", "neither lit_interp's nor registered"),
        "malicious": (tmp_path / "malicious.ckpt", "refused"),
    }


def test_bad_checkpoints_are_refused_in_one_line_and_write_nothing(run, tmp_path, capsys):
    for case, (path, expected) in bad_checkpoints(tmp_path, run).items():
        out = tmp_path / f"out_{path.stem}"
        code, err = analyze(["--ckpt_path", str(path), "--out", str(out)], capsys)
        assert code == 2, case
        assert (
            err.startswith("lit_interp: error: ") and err.count("\n") == 1 and expected in err and str(path) in err
        ), (case, err)
        assert not out.exists(), case
    assert not (tmp_path / "pwned").exists()  # the pickled os.system never ran
    torch.save({"extra": Payload(tmp_path / "control")}, tmp_path / "control.ckpt")
    torch.load(tmp_path / "control.ckpt", weights_only=False)  # control: the same payload does run when unpickled
    assert (tmp_path / "control").exists()


def test_other_user_errors(run, tmp_path, capsys):
    empty_run = tmp_path / "version_9"
    empty_run.mkdir()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    cases = {
        "no snapshots": (["--run", str(empty_run)], "has no snapshots"),
        "run is not a dir": (["--run", str(tmp_path / "nope")], "is not a directory"),
        "non-empty out": (["--run", str(run), "--out", str(occupied)], "--overwrite"),
        "no source": ([], "one of the arguments --ckpt_path --run --runs is required"),
        "both sources": (["--run", str(run), "--ckpt_path", "x.ckpt"], "not allowed with"),
    }
    for case, (args, expected) in cases.items():
        code, err = analyze(args, capsys)
        assert code == 2 and err.startswith("lit_interp: error: ") and err.count("\n") == 1 and expected in err, (
            case,
            err,
        )
    assert sorted(p.name for p in occupied.iterdir()) == ["keep.txt"] and list(empty_run.iterdir()) == []


def test_help_stays_light():
    code = "import sys; from lit_interp.cli import main; main(['--help']); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "analyze" in result.stdout and result.stdout.strip().endswith("False")
