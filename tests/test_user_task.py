"""A task defined outside lit_interp (docs/examples/my_tasks.py) trains, resumes and is analyzed with its analysis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import QUIET

from lit_interp.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "docs/examples"
TASK = ["--model", "my_tasks.LettersModule", "--data", "my_tasks.LettersDataModule"]
SMALL = ["--trainer.callbacks.init_args.probe_batch_size=16", "--checkpoint.every_n_train_steps=4", *QUIET]


@pytest.fixture(autouse=True)
def importable(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


def test_a_user_task_trains_resumes_and_is_analyzed_with_its_own_analysis(capsys):
    main(["fit", *TASK, "--trainer.max_steps=4", *SMALL])
    main(["fit", *TASK, "--trainer.max_steps=8", "--ckpt_path", "last", *SMALL])
    run = Path("lightning_logs/version_0")
    assert not Path("lightning_logs/version_1").exists()
    snapshot = json.loads((run / "analysis/step_0000008.json").read_text())
    share = snapshot["heads"]["L0H0"]["vowel_attention"]
    assert 0.0 < share < 1.0 and "prev_token_score" in snapshot["heads"]["L0H0"]
    with pytest.raises(SystemExit) as refused:
        main(["analyze", "--ckpt_path", str(run / "checkpoints/last.ckpt"), "--out", "report"])
    assert refused.value.code == 2 and "pass --config lightning_logs/version_0/config.yaml" in capsys.readouterr().err
    assert not Path("report").exists()
    main(
        [
            "analyze",
            "--ckpt_path",
            str(run / "checkpoints/last.ckpt"),
            "--config",
            str(run / "config.yaml"),
            "--out",
            "report",
            "--probe_batch_size",
            "16",
        ]
    )
    summary = json.loads(Path("report/summary.json").read_text())
    assert summary["heads"]["L0H0"]["vowel_attention"] == pytest.approx(share, rel=1e-5)


def test_a_checkpoint_alone_never_imports_an_unregistered_task(capsys):
    main(
        ["fit", *TASK, "--trainer.max_steps=2", "--trainer.callbacks=[]", "--checkpoint.every_n_train_steps=2", *QUIET]
    )
    with pytest.raises(SystemExit) as refused:
        main(["validate", "--ckpt_path", "lightning_logs/version_0/checkpoints/last.ckpt", *QUIET])
    assert (
        refused.value.code == 2
        and "my_tasks.LettersModule, which is neither lit_interp's nor registered" in capsys.readouterr().err
    )
