"""`python -m lit_interp`: configs, TensorBoard runs, checkpoints, exact resume and user errors."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONFIGS, QUIET, TINY, inside, run_lit_interp, tiny_fit
from lightning.pytorch.callbacks import Callback

from lit_interp.commands.train import run_cli
from lit_interp.startup import startup_done

CONFIG_NAMES = sorted(TINY)


def last_checkpoint(version: int = 0) -> dict:
    return torch.load(Path(f"lightning_logs/version_{version}/checkpoints/last.ckpt"), weights_only=False)


@pytest.mark.parametrize("config", CONFIG_NAMES)
def test_every_config_runs_under_fast_dev_run(config):
    cli = run_cli(["fit", "--config", str(CONFIGS / f"{config}.yaml"), "--trainer.fast_dev_run=2", *QUIET])
    assert cli.trainer.global_step == 2
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])


def test_fit_without_config_is_the_digits_config(capsys):
    def printed(*args):
        with pytest.raises(SystemExit):
            run_lit_interp("fit", *args, "--print_config")
        return yaml.safe_load(capsys.readouterr().out)

    default, digits = printed(), printed("--config", str(CONFIGS / "prev_token_digits.yaml"))
    for key in ("model", "data", "trainer", "checkpoint", "seed_everything"):
        assert default[key] == digits[key], key


def test_linked_values_are_set_once_on_the_data():
    cli = run_cli(
        [
            "fit",
            "--config",
            str(CONFIGS / "bos_ints_mlp.yaml"),
            *TINY["bos_ints_mlp"],
            "--data.init_args.n_ctx=7",
            "--trainer.fast_dev_run=1",
            *QUIET,
        ]
    )
    assert cli.model.hparams.n_ctx == 7 and cli.model.model.cfg.n_ctx == 7
    assert cli.model.model.cfg.d_vocab == 300
    with pytest.raises(SystemExit):
        run_lit_interp("fit", "--model.init_args.n_ctx=7")


def test_fit_writes_a_tensorboard_run_with_checkpoints_and_config():
    tiny_fit(
        "prev_token_digits",
        "--trainer.max_steps=8",
        "--trainer.val_check_interval=4",
        "--checkpoint.every_n_train_steps=4",
    )
    run = Path("lightning_logs/version_0")
    assert (run / "config.yaml").is_file() and (run / "hparams.yaml").is_file()
    assert list(run.glob("events.out.tfevents.*"))
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"last.ckpt", "step_0000004.ckpt", "step_0000008.ckpt"}
    assert last_checkpoint()["global_step"] == 8
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["precision"] == "32-true"


@pytest.mark.parametrize("config", CONFIG_NAMES)
def test_resume_is_exact(config, tmp_path, monkeypatch):
    # One thread for both runs: bit for bit holds at one thread count, and the policy's count follows the load.
    args = ["--trainer.val_check_interval=3", "--checkpoint.every_n_train_steps=3", "--threads=1"]
    if config != "prev_token_digits":
        # The test reads the weights only: one config resumes with its analysis on (snapshots are read-only for
        # training, test_callbacks), the others without its cost.
        args.append("--trainer.callbacks=[]")
    (tmp_path / "straight").mkdir()
    (tmp_path / "resumed").mkdir()
    monkeypatch.chdir(tmp_path / "straight")
    tiny_fit(config, "--trainer.max_steps=12", *args)
    straight = last_checkpoint()
    monkeypatch.chdir(tmp_path / "resumed")
    tiny_fit(config, "--trainer.max_steps=6", *args)
    tiny_fit(config, "--trainer.max_steps=12", "--ckpt_path", "last", *args)
    resumed = last_checkpoint()
    assert not Path("lightning_logs/version_1").exists(), "resume must continue in the same version directory"
    assert resumed["global_step"] == straight["global_step"] == 12
    for name, tensor in straight["state_dict"].items():
        assert torch.equal(tensor, resumed["state_dict"][name]), name
    assert resumed["lr_schedulers"] == straight["lr_schedulers"]


def test_resuming_an_earlier_checkpoint_branches_into_a_new_run_and_validate_needs_only_it():
    args = ["--trainer.val_check_interval=4", "--checkpoint.every_n_train_steps=2"]
    tiny_fit("bos_ints_attn_only", "--trainer.max_steps=4", *args)
    parent = fingerprint(Path("lightning_logs/version_0"))
    early = "lightning_logs/version_0/checkpoints/step_0000002.ckpt"
    tiny_fit("bos_ints_attn_only", "--trainer.max_steps=6", "--ckpt_path", early, *args)
    # The run went on to step 4: resuming its step-2 checkpoint in place would overwrite its later files.
    assert fingerprint(Path("lightning_logs/version_0")) == parent
    assert last_checkpoint(1)["global_step"] == 6
    branched = json.loads(Path("lightning_logs/version_1/branched_from.json").read_text())
    assert branched == {"run": "lightning_logs/version_0", "checkpoint": early, "step": 2, "parent_reached_step": 4}
    before = fingerprint(Path("."))
    cli = run_cli(
        [
            "validate",
            "--config",
            str(CONFIGS / "bos_ints_attn_only.yaml"),
            *TINY["bos_ints_attn_only"],
            "--ckpt_path",
            "lightning_logs/version_1/checkpoints/last.ckpt",
            *QUIET,
        ]
    )
    assert 0.0 <= float(cli.trainer.callback_metrics["val/acc"]) <= 1.0
    assert fingerprint(Path(".")) == before, "validate evaluates a checkpoint and writes nothing"


def fingerprint(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


BAD_ARGS = [
    (["--config", "{digits}", "--model.init_args.foo=1"], "foo"),
    (["--model", "lit_interp.tasks.nope.Nope"], "nope"),
    (["--config", "{digits}", "--data.init_args.batch_size=0"], "batch_size=0"),
    (["--config", "{digits}", "--data.init_args.n_ctx=1"], "n_ctx=1"),
    (["--config", "{bos}", "--data.init_args.bos_token=101"], "bos_token=101"),
    (["--config", "{digits}", "--model.init_args.lr=0"], "lr=0"),
    (["--config", "{recurrence}", "--data.init_args.order=7"], "order=7"),
    (["--config", "broken.yaml"], "broken.yaml is not valid YAML"),
    (["--config", "{digits}", "--ckpt_path", "missing.ckpt"], "missing.ckpt"),
    (["--config", "{digits}", "--ckpt_path", "truncated.ckpt"], "truncated.ckpt"),
    (["--config", "{digits}", "--ckpt_path", "lightning_logs/version_1/checkpoints/last.ckpt"], "BosIntsModule"),
    (["--config", "{bos}", "--ckpt_path", "lightning_logs/version_1/checkpoints/last.ckpt"], "d_model: 16 -> 128"),
    (["--config", "{digits}", "--trainer.val_check_interval=0"], "val_check_interval=0 is not accepted"),
    (["--config", "{digits}", "--model.init_args.d_head=7"], "d_head=7 must be even"),
    (["--config", "{digits}", "--data.init_args.seed=-1"], "seed=-1 must be >= 0"),
    (["--config", "latin1.yaml"], "latin1.yaml is not UTF-8"),
    (["--config", "{digits}", "--trainer.default_root_dir=a_file"], "a_file/lightning_logs: Not a directory"),
    (["--config", "{digits}", "--trainer.logger.init_args.save_dir=a_file"], "a_file/lightning_logs: Not a directory"),
    (["--config", "{digits}", "--data.init_args.batch_size=500000"], "batch_size=500000 with n_ctx=10 needs about"),
    (["--config", "{bos}", "--data.init_args.n_ctx=100000"], "n_ctx=100000 is longer than"),
    (["--config", "{digits}", "--trainer.devices=0"], "trainer.devices=0 is not accepted"),
    (["--config", "{digits}", "--model.init_args.lr=abc"], "model.init_args.lr: expected a float, got 'abc'"),
    (["--config", "{digits}", "--seed_everything=abc"], "seed_everything: expected a bool or an int, got 'abc'"),
    (["--config", "{digits}", "--trainer.max_step=60"], "unrecognized arguments: --trainer.max_step=60"),
    (["--config", "{digits}", "--trainer.max_steps=-1"], "max_steps=-1 trains forever"),
    *(
        [(["--config", "{digits}", "--trainer.accelerator=cuda"], "no CUDA device")]
        if not torch.cuda.is_available()
        else []
    ),
    # Trainer values Lightning refuses with a traceback, or runs and crashes on.
    *(
        (["--config", "{digits}", f"--trainer.{key}={value}"], f"trainer.{key}={shown} is not accepted")
        for key, value, shown in [
            ("devices", "-3", "-3"),
            ("devices", "abc", "abc"),
            ("strategy", "nonsense", "nonsense"),
            ("strategy", "deepspeed", "deepspeed"),
            ("strategy", "fsdp", "fsdp"),
            ("val_check_interval", "2.5", "2.5"),
            ("val_check_interval", "1e-9", "1e-09"),
            ("accumulate_grad_batches", "0", "0"),
            ("gradient_clip_algorithm", "bogus", "bogus"),
            ("gradient_clip_val", "-1", "-1"),
            ("log_every_n_steps", "-1", "-1"),
            ("max_time", "garbage", "garbage"),
            ("fast_dev_run", "-1", "-1"),
            ("num_nodes", "0", "0"),
            ("limit_val_batches", "-1", "-1"),
            ("accelerator", "tpu", "tpu"),
            ("accelerator", "mps", "mps"),
            ("precision", "transformer-engine", "transformer-engine"),
            ("precision", "64-true", "64-true"),
        ]
    ),
    *(
        [(["--config", "{digits}", "--trainer.devices=[0,1]"], "trainer.devices=[0, 1] is not accepted")]
        if not torch.cuda.is_available()
        else []
    ),
    (["--config", "{digits}", "--checkpoint.every_n_train_steps=-1"], "checkpoint.every_n_train_steps=-1 must be"),
    (["--config", "{digits}", "--seed_everything=-1"], "seed_everything=-1 must be an integer from 0 to 4294967295"),
    (["--config", "{digits}", f"--seed_everything={2**70}"], f"seed_everything={2**70} must be an integer"),
    (["--config", "{digits}", "--trainer.default_root_dir=" + "x" * 300], "longer than the filesystem allows"),
    # Interpolations: unresolvable, circular, or reading a secret into the saved config.
    (["--config", "{digits}", "--config", "nope.yaml"], "cannot be resolved (Interpolation key 'nope' not found)"),
    (["--config", "{digits}", "--config", "loop.yaml"], "cannot be resolved (Recursive interpolation detected)"),
    (["--config", "{digits}", "--config", "env.yaml"], "env.yaml reads an environment variable"),
    (["--config", "{digits}", "--model.init_args.lr=${oc.env:HOME}"], "an option reads an environment variable"),
    # A model on another task's data.
    (["--model", "{bos_module}", "--data", "{digits_data}"], "BosIntsModule learns sequences that start with BOS"),
    (["--model", "{recurrence_module}", "--data", "{digits_data}"], "AffineRecurrenceModule cannot train on"),
]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    """A digits run (version_0) and a bos_ints run (version_1), trained once for every bad-input case."""
    root = tmp_path_factory.mktemp("two_runs")
    with inside(root):
        tiny_fit(
            "prev_token_digits", "--trainer.max_steps=2", "--checkpoint.every_n_train_steps=2", "--trainer.callbacks=[]"
        )
        tiny_fit(
            "bos_ints_attn_only",
            "--trainer.max_steps=2",
            "--checkpoint.every_n_train_steps=2",
            "--model.init_args.d_head=8",
            "--trainer.callbacks=[]",
        )
    return root / "lightning_logs"


@pytest.mark.parametrize("args, needle", BAD_ARGS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, needle, capsys, tmp_path, two_runs):
    shutil.copytree(two_runs, "lightning_logs")
    Path("broken.yaml").write_text("model: [\n  oops")
    Path("latin1.yaml").write_bytes("trainer:\n  max_steps: 2 # caf\xe9\n".encode("latin-1"))
    Path("a_file").write_text("not a directory")
    Path("truncated.ckpt").write_bytes(Path("lightning_logs/version_0/checkpoints/last.ckpt").read_bytes()[:2000])
    Path("nope.yaml").write_text("model:\n  init_args:\n    d_model: ${nope}\n")
    Path("loop.yaml").write_text(
        "model:\n  init_args:\n    d_model: ${model.init_args.d_head}\n    d_head: ${model.init_args.d_model}\n"
    )
    Path("env.yaml").write_text("model:\n  init_args:\n    lr: ${oc.env:HOME}\n")
    before = fingerprint(tmp_path)
    capsys.readouterr()
    names = {"digits": "prev_token_digits", "bos": "bos_ints_attn_only", "recurrence": "affine_recurrence"}
    classes = {
        "bos_module": "lit_interp.tasks.bos_ints.BosIntsModule",
        "recurrence_module": "lit_interp.tasks.affine_recurrence.AffineRecurrenceModule",
        "digits_data": "lit_interp.tasks.prev_token_digits.DigitsDataModule",
    }
    values = {k: str(CONFIGS / f"{v}.yaml") for k, v in names.items()} | classes
    for name, value in values.items():
        args = [arg.replace("{" + name + "}", value) for arg in args]
    with pytest.raises(SystemExit) as exit_info:
        run_lit_interp("fit", *args)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("lit_interp: error:") and needle in error[0], error
    assert fingerprint(tmp_path) == before, "a failed command must write nothing"


def test_resume_last_with_nothing_to_resume_says_so(capsys):
    with pytest.raises(SystemExit):
        run_lit_interp("fit", "--ckpt_path", "last")
    assert "--ckpt_path last: no run of PrevTokenDigitsModule with checkpoints under lightning_logs" in (
        capsys.readouterr().err
    )
    assert not Path("lightning_logs").exists()


def test_malicious_checkpoint_is_refused_without_running_it(capsys, tmp_path):
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"state_dict": {}, "payload": Payload()}, "evil.ckpt")
    with pytest.raises(SystemExit):
        run_lit_interp("validate", "--ckpt_path", "evil.ckpt")
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()


def test_top_level_help_is_fast_and_imports_no_torch():
    code = "import sys; from lit_interp.cli import main; main(['--help']); assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "fit" in result.stdout and "validate" in result.stdout


def test_module_entry_point_reports_errors_with_exit_code_2():
    result = subprocess.run(
        [sys.executable, "-m", "lit_interp", "fit", "--data.init_args.batch_size=-3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1]
        == "lit_interp: error: batch_size=-3 must be positive; set data.batch_size >= 1"
    )


class GarbageCollectorProbe(Callback):
    """Writes the collector's state at the start of training to gc_state.json."""

    def on_train_start(self, trainer, pl_module) -> None:
        Path("gc_state.json").write_text(json.dumps({"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}))


def test_the_entry_point_trains_with_the_collector_on_and_the_start_up_objects_frozen(tmp_path):
    """`python -m lit_interp` starts with the collector off (start-up builds ~0.5M long-lived objects);
    training must run with it back on, and those objects frozen so no full collection walks them."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lit_interp",
            "fit",
            "--config",
            str(CONFIGS / "prev_token_digits.yaml"),
            *TINY["prev_token_digits"],
            *QUIET,
            "--trainer.max_steps=1",
            "--trainer.callbacks=[]",
            "--trainer.callbacks+=test_cli.GarbageCollectorProbe",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": f"{Path(__file__).parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    state = json.loads((tmp_path / "gc_state.json").read_text())
    assert state["enabled"] and state["frozen"] > 100_000


def test_in_process_callers_keep_their_collector_untouched():
    frozen = gc.get_freeze_count()
    startup_done()
    assert gc.isenabled() and gc.get_freeze_count() == frozen
