"""Hostile or careless inputs: files that would run code, mix runs, hang, fill memory or write elsewhere.

Each case asserts the exact outcome: its one line, exit code 2, and that nothing was written (a fingerprint of the
directory before and after), or the documented behaviour.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, TINY, inside, run_lit_interp, tiny_fit

from lit_interp.cli import main
from lit_interp.errors import ConfigError

NO_ANALYSIS = ["--trainer.callbacks=[]"]


def fingerprint(root: Path) -> dict[str, str]:
    """Every file under root (symlinks as their target's name) and its content's hash."""
    found = {}
    for path in sorted(Path(root).rglob("*")):
        if path.is_symlink():
            found[str(path)] = "-> " + os.readlink(path)
        elif path.is_file():
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def outcome(capsys, *args: str) -> tuple[int, list[str]]:
    """Exit code and stderr lines of `python -m lit_interp ARGS`, run in-process (training quietly)."""
    capsys.readouterr()
    try:
        run_lit_interp(*args) if args[0] in ("fit", "validate", "test") else main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err.strip().splitlines()


def assert_refused(capsys, needle: str, *args: str, root: Path = Path(".")) -> None:
    before = fingerprint(root)
    code, error = outcome(capsys, *args)
    assert code == 2 and len(error) == 1 and error[0].startswith("lit_interp: error:") and needle in error[0], error
    assert fingerprint(root) == before, "a refused command writes nothing"


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A tiny digits run in lightning_logs/version_0 with checkpoints at steps 2 and 4 and snapshots."""
    root = tmp_path_factory.mktemp("digits_run")
    with inside(root):
        tiny_fit(
            "prev_token_digits",
            "--trainer.max_steps=4",
            "--checkpoint.every_n_train_steps=2",
            "--trainer.callbacks.init_args.probe_batch_size=4",
        )
    return root


@pytest.fixture()
def run_copy(digits_run, tmp_path) -> Path:
    shutil.copytree(digits_run / "lightning_logs", tmp_path / "lightning_logs")
    return tmp_path / "lightning_logs" / "version_0"


# Never run a stranger's code


def test_a_checkpoint_naming_a_module_in_the_working_directory_never_imports_it(run_copy, capsys, tmp_path):
    marker = tmp_path / "evil-ran"
    Path("rt_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Evil: pass\n")
    checkpoint = torch.load(run_copy / "checkpoints/last.ckpt", weights_only=False)
    for field in ("hyper_parameters", "datamodule_hyper_parameters"):
        planted = json.loads(json.dumps({k: v for k, v in checkpoint.items() if k != "state_dict"}, default=str))
        planted["state_dict"] = checkpoint["state_dict"]
        planted[field]["_class_path"] = "rt_evil.Evil"
        torch.save(planted, f"{field}.ckpt")
        for command in ("validate", "test"):
            assert_refused(
                capsys,
                "rt_evil.Evil, which is neither lit_interp's nor registered",
                command,
                "--ckpt_path",
                f"{field}.ckpt",
            )
    assert not marker.exists() and "rt_evil" not in sys.modules


# Never mix or rewrite a run


def test_resume_last_names_an_unreadable_last_checkpoint_and_never_takes_another_run(run_copy, capsys):
    older = run_copy.parent / "version_1"
    shutil.copytree(run_copy, older)  # an older-looking run of the same task, also finished
    newest = run_copy.parent / "version_2"
    shutil.copytree(run_copy, newest)
    (newest / "checkpoints/last.ckpt").write_bytes((newest / "checkpoints/last.ckpt").read_bytes()[:1000])
    assert_refused(
        capsys,
        "--ckpt_path last: checkpoint lightning_logs/version_2/checkpoints/last.ckpt is not a complete PyTorch "
        "checkpoint (truncated, or another kind of file); pass a .ckpt written by lit_interp; resume from its newest "
        "readable checkpoint with --ckpt_path lightning_logs/version_2/checkpoints/step_0000004.ckpt",
        "fit", "--config", str(CONFIGS / "prev_token_digits.yaml"), *TINY["prev_token_digits"], "--ckpt_path", "last",
    )  # fmt: skip
    (newest / "checkpoints/last.ckpt").unlink()
    code, error = outcome(
        capsys, "fit", "--config", str(CONFIGS / "prev_token_digits.yaml"), *TINY["prev_token_digits"],
        "--ckpt_path", "last",
    )  # fmt: skip
    assert code == 2 and "checkpoint lightning_logs/version_2/checkpoints/last.ckpt does not exist" in error[0], error


def test_a_malformed_last_checkpoint_is_one_line_not_an_attribute_error(run_copy, capsys):
    checkpoint = torch.load(run_copy / "checkpoints/last.ckpt", weights_only=False)
    checkpoint["lit_interp"] = ["not", "a", "mapping"]
    torch.save(checkpoint, run_copy / "checkpoints/last.ckpt")
    (run_copy / "config.yaml").unlink()  # so the task can only be read from the checkpoint
    assert_refused(
        capsys,
        "--ckpt_path last: cannot tell which task lightning_logs/version_0 trained",
        "fit", "--config", str(CONFIGS / "prev_token_digits.yaml"), *TINY["prev_token_digits"], "--ckpt_path", "last",
    )  # fmt: skip


@pytest.mark.parametrize(
    "override, key",
    [
        ("--data.init_args.seed=5", "data.init_args.seed: 0 -> 5"),
        ("--data.init_args.batch_size=16", "data.init_args.batch_size: 64 -> 16"),
        ("--model.init_args.lr=0.01", "model.init_args.lr: 0.001 -> 0.01"),
        ("--model.init_args.decay_steps=100", "model.init_args.decay_steps: 0 -> 100"),
        ("--trainer.gradient_clip_val=1.0", "trainer.gradient_clip_val: null -> 1.0"),
        ("--seed_everything=3", "seed_everything: 0 -> 3"),
    ],
)
def test_a_resume_that_changes_what_ran_is_refused_with_the_differences(run_copy, capsys, override, key):
    args = ["fit", "--config", str(CONFIGS / "prev_token_digits.yaml"), *TINY["prev_token_digits"]]
    assert_refused(capsys, key, *args, "--trainer.max_steps=6", "--ckpt_path", "last", override)


def test_a_resume_may_change_how_long_it_trains_and_what_it_logs_and_says_so(run_copy, capsys):
    args = ["fit", "--config", str(CONFIGS / "prev_token_digits.yaml"), *TINY["prev_token_digits"]]
    args += ["--trainer.callbacks.init_args.probe_batch_size=4", "--trainer.max_steps=6", "--ckpt_path", "last"]
    code, _ = outcome(capsys, *args, "--trainer.log_every_n_steps=3")
    assert code == 0
    (record,) = json.loads((run_copy / "resumes.json").read_text())
    assert record == {
        "step": 4,
        "changed": {
            "trainer.max_steps": {"from": 4, "to": 6},
            "trainer.log_every_n_steps": {"from": 25, "to": 3},
            "checkpoint.every_n_train_steps": {"from": 2, "to": 50},  # the config's, not the fixture's 2
        },
    }


def test_a_checkpoint_with_a_string_global_step_is_refused(run_copy, capsys):
    checkpoint = torch.load(run_copy / "checkpoints/last.ckpt", weights_only=False)
    checkpoint["global_step"] = "4"
    torch.save(checkpoint, "string_step.ckpt")
    assert_refused(capsys, "has global_step '4', not a step count", "validate", "--ckpt_path", "string_step.ckpt")


# Never hang on a file, never read one until memory runs out


def lit_interp_process(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lit_interp", *args], capture_output=True, text=True, timeout=timeout)


def test_a_fifo_as_config_snapshot_or_event_file_never_blocks(run_copy):
    os.mkfifo("pipe.yaml")
    result = lit_interp_process("fit", "--config", "pipe.yaml")
    assert result.returncode == 2 and result.stderr.strip().endswith(
        "config pipe.yaml is not a regular file; pass a file written by lit_interp"
    ), result.stderr
    os.mkfifo(run_copy / "analysis/step_0000005.json")
    result = lit_interp_process("analyze", "--run", str(run_copy))
    assert result.returncode == 2 and "step_0000005.json is not a regular file" in result.stderr, result.stderr
    (run_copy / "analysis/step_0000005.json").unlink()
    os.mkfifo(run_copy / "events.out.tfevents.0.fifo")
    result = lit_interp_process("analyze", "--run", str(run_copy))
    assert result.returncode == 0, result.stderr


def test_a_snapshot_linked_to_dev_zero_is_refused(run_copy, capsys):
    (run_copy / "analysis/step_0000005.json").symlink_to("/dev/zero")
    assert_refused(capsys, "step_0000005.json is not a regular file", "analyze", "--run", str(run_copy), root=run_copy)


@pytest.mark.parametrize(
    "content, problem",
    [
        ('{"step": ' + "1" * 400 + ', "task": "T", "loss": 1}', "has step 1111111111111"),
        ("[" * 100_000 + "]" * 100_000, "is nested too deeply"),
        ('{"task": "T", "loss": 1}', "has step None, not a non-negative integer"),
        ('{"step": 3, "task": "T", "loss": 1, "heads": ["L0H0"]}', "has a 'heads' section that is not a mapping"),
        ('{"step": 3, "task": "T", "loss": 1, "layers": {"0": [1]}}', "has a 'layers' section that is not a mapping"),
        (
            '{"step": 3, "task": "T", "loss": 1, "composition": {"labels": ["L0H0"], "k": [[1, 2]]}}',
            "has a 'composition' section",
        ),
        ('{"step": 4, "task": "T", "loss": 1}', "has step 4 but its name says 3"),
        (b"\xff\xfe{}", "is not valid JSON"),
    ],
)
def test_a_malformed_snapshot_is_one_line_naming_the_file(run_copy, capsys, content, problem):
    path = run_copy / "analysis/step_0000003.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert_refused(capsys, f"snapshot {path} {problem}", "analyze", "--run", str(run_copy), root=run_copy)


# Never write outside the output directory


@pytest.mark.parametrize("default", ["analysis_report", "checkpoints/analysis_last"])
def test_a_symlink_planted_at_a_default_output_is_never_followed(run_copy, capsys, tmp_path, default):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run_copy / default).symlink_to(elsewhere)
    source = (
        ["--run", str(run_copy)]
        if default == "analysis_report"
        else ["--ckpt_path", str(run_copy / "checkpoints/last.ckpt")]
    )
    assert_refused(capsys, "is a symbolic link; pass a real directory", "analyze", *source, root=tmp_path)
    assert not any(elsewhere.iterdir())


def test_an_output_that_cannot_be_created_is_one_line(run_copy, capsys):
    Path("a_file").write_text("")
    assert_refused(
        capsys, "--out a_file/report cannot be created", "analyze", "--run", str(run_copy), "--out", "a_file/report"
    )


# Memory: sizes from files and flags are bounded


def test_a_huge_probe_size_in_a_checkpoint_or_a_flag_is_refused(run_copy, capsys):
    checkpoint = torch.load(run_copy / "checkpoints/last.ckpt", weights_only=False)
    (name,) = [key for key in checkpoint["callbacks"] if key.startswith("AnalysisSnapshots")]
    checkpoint["callbacks"][name]["probe_batch_size"] = 2**31
    torch.save(checkpoint, "huge_probe.ckpt")
    assert_refused(capsys, "too large for this machine's memory", "analyze", "--ckpt_path", "huge_probe.ckpt")
    last = str(run_copy / "checkpoints/last.ckpt")
    assert_refused(
        capsys, "too large for this machine's memory", "analyze", "--ckpt_path", last, "--probe_batch_size", "100000000"
    )
    from lit_interp import load

    with pytest.raises(ConfigError, match="too large for this machine's memory"):
        load("huge_probe.ckpt")


# The notebook API: one exception type, the same one-line messages


@pytest.mark.parametrize(
    "damage",
    ["truncated checkpoint", "malformed snapshot", "list-valued heads", "lit_interp field a list", "string d_model"],
)
def test_load_raises_config_error_on_a_hostile_run_directory(run_copy, damage):
    from lit_interp import load

    last = run_copy / "checkpoints/last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    if damage == "truncated checkpoint":
        last.write_bytes(last.read_bytes()[:500])
    elif damage == "malformed snapshot":
        (run_copy / "analysis/step_0000002.json").write_text("{cut")
    elif damage == "list-valued heads":
        (run_copy / "analysis/step_0000002.json").write_text('{"step": 2, "task": "T", "loss": 1, "heads": [1]}')
    elif damage == "lit_interp field a list":
        checkpoint["lit_interp"] = [1]
        torch.save(checkpoint, last)
    else:
        checkpoint["hyper_parameters"]["d_model"] = "16"
        torch.save(checkpoint, last)
    with pytest.raises(ConfigError) as error:
        load(run_copy)
    assert "\n" not in str(error.value) and str(run_copy) in str(error.value)


# A user's classes get their own defaults


def test_fit_with_a_users_classes_and_no_config_takes_their_defaults(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "docs" / "examples"))
    run_lit_interp("fit", "--model", "my_tasks.LettersModule", "--data", "my_tasks.LettersDataModule",
                   "--trainer.max_steps=2", *NO_ANALYSIS)  # fmt: skip
    hparams = torch.load("lightning_logs/version_0/checkpoints/last.ckpt", weights_only=False)
    model, data = hparams["hyper_parameters"], hparams["datamodule_hyper_parameters"]
    assert (model["d_model"], data["n_ctx"], data["batch_size"]) == (16, 8, 32)  # the classes' own, not the digits'


# Validation and snapshots of a resumed run are a straight run's


def straight_and_resumed(tmp_path, kill: list[str], first: int, total: int, args: list[str]):
    """(val/loss of the straight and the resumed run, their snapshot steps); the first part killed if `kill`."""
    from lit_interp.runlogs import read_scalars
    from lit_interp.snapshots import read_snapshots

    for name in ("straight", "resumed"):
        (tmp_path / name).mkdir()
        with inside(tmp_path / name):
            if name == "straight":
                tiny_fit("prev_token_digits", f"--trainer.max_steps={total}", *args)
                continue
            if kill:
                with pytest.raises(SystemExit) as exit_info:
                    tiny_fit("prev_token_digits", f"--trainer.max_steps={first}", *args, *kill)
                assert exit_info.value.code == 143
            else:
                tiny_fit("prev_token_digits", f"--trainer.max_steps={first}", *args)
            tiny_fit("prev_token_digits", f"--trainer.max_steps={total}", "--ckpt_path", "last", *args)
    runs = [tmp_path / name / "lightning_logs/version_0" for name in ("straight", "resumed")]
    return [read_scalars(run)["val/loss"] for run in runs], [read_snapshots(run).steps for run in runs]


def test_sigterm_during_a_validation_loses_no_validation_point(tmp_path):
    args = ["--trainer.val_check_interval=5", "--checkpoint.every_n_train_steps=5", *NO_ANALYSIS]
    kill = ["--trainer.callbacks+=test_hostile.SigtermAtValidation"]
    (straight, resumed), _ = straight_and_resumed(tmp_path, kill, 20, 20, args)
    assert resumed[0] == straight[0] == [4, 9, 14, 19]
    assert resumed[1] == pytest.approx(straight[1], rel=1e-6)


def test_n_then_resume_to_2n_validates_and_snapshots_where_a_straight_2n_run_does(tmp_path):
    args = ["--trainer.val_check_interval=5", "--trainer.callbacks.init_args.probe_batch_size=4"]
    (straight, resumed), (straight_steps, resumed_steps) = straight_and_resumed(tmp_path, [], 20, 40, args)
    assert resumed[0] == straight[0] == [4, 9, 14, 19, 24, 29, 34, 39]
    assert resumed[1] == pytest.approx(straight[1], rel=1e-6)
    assert straight_steps == [1, 2, 3, 6, 10, 18, 32, 40]
    assert resumed_steps == sorted({*straight_steps, 20})  # and the first run's own last snapshot


class SigtermAtValidation(__import__("lightning").pytorch.Callback):
    """Sends SIGTERM to this process when the validation at step 10 starts."""

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.global_step == 10 and not trainer.sanity_checking:
            os.kill(os.getpid(), __import__("signal").SIGTERM)
