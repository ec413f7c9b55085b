"""Benchmark lit_interp's training against a plain PyTorch loop over the same HookedTransformer.

Every measurement runs in a fresh subprocess (so time to first step and peak memory are whole-
process figures); the two variants alternate, repeat, and the table shows medians and the ratio
lit_interp / plain loop. `--ttq` times `python -m lit_interp fit` from the shell until each
config reaches its seed's figure (Lightning's EarlyStopping with a stopping threshold).
`--callback-share` runs each config as shipped, to its full length, and reports the share of
the fit's wall time spent inside the analysis callbacks' snapshots.

    python scripts/benchmark.py --quick                       # CPU table, a few minutes
    python scripts/benchmark.py --device cuda --compile       # fp32, bf16-mixed, + torch.compile
    python scripts/benchmark.py --compile --configs bos_ints_mlp --steps 200   # CPU: eager against compiled
    python scripts/benchmark.py --ttq                         # time to quality, whole process
    python scripts/benchmark.py --callback-share              # analysis cost at default cadence
    python scripts/benchmark.py --quick --load 2              # the same table with 2 busy loops saturating the cores
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from busy_loop import busy_cores

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ["prev_token_digits", "bos_ints_attn_only", "bos_ints_mlp", "affine_recurrence"]
# The seeds' figures: (metric, mode, threshold); EarlyStopping stops once it is crossed.
QUALITY = {
    "prev_token_digits": ("val/acc", "max", 0.999),
    "bos_ints_attn_only": ("val/acc", "max", 0.989),
    "bos_ints_mlp": ("val/loss", "min", 0.005),
    "affine_recurrence": ("val/loss", "min", 1e-3),
}
RESULT_PREFIX = "BENCHMARK_RESULT "
SETTINGS: dict = {}  # what the worker's StepTimer reads (set before the CLI builds it)
RESULTS: dict = {}  # what the StepTimer writes


# ---------------------------------------------------------------- workers (one per subprocess)


def seconds_since_launch() -> float:
    return time.time() - float(os.environ["BENCHMARK_LAUNCH"])


def synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def peak_memory_mib(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """`data.init_args.batch_size=1024` style overrides, applied to the YAML as the CLI would."""
    import yaml

    for override in overrides:
        key, value = override.split("=", 1)
        *parents, leaf = key.split(".")
        section = config
        for parent in parents:
            section = section.setdefault(parent, {})
        section[leaf] = yaml.safe_load(value)
    return config


def build_task(config_path: str, overrides: list[str]):
    """The config's DataModule and LightningModule, built from its YAML as the CLI would."""
    import importlib

    import lightning.pytorch as pl
    import yaml

    from lit_interp.tasks.base import LINKED_ARGUMENTS as LINKED

    config = apply_overrides(yaml.safe_load(Path(config_path).read_text()), overrides)

    def instantiate(section: dict, **extra):
        module_name, class_name = section["class_path"].rsplit(".", 1)
        return getattr(importlib.import_module(module_name), class_name)(**section.get("init_args", {}), **extra)

    pl.seed_everything(config.get("seed_everything", 0), verbose=False)
    data = instantiate(config["data"])
    module = instantiate(config["model"], **{name: getattr(data, name) for name in LINKED})
    return config, data, module


def make_step_timer():
    """A Callback that times steady-state training steps, leaving validation out of the window."""
    import lightning.pytorch as pl

    class StepTimer(pl.Callback):
        def __init__(self):
            self.step_ends: list[float] = []
            self.validation_seconds = 0.0

        def setup(self, trainer, pl_module, stage):
            if SETTINGS.get("compile"):
                compile_training_forward(pl_module)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            done = len(self.step_ends)
            if done in (0, SETTINGS["warmup_steps"] - 1) or done == SETTINGS["steps"] - 1:
                synchronize(SETTINGS["device"])
            self.step_ends.append(time.perf_counter())
            if done == 0:
                RESULTS["first_step_s"] = seconds_since_launch()
            if done == SETTINGS["warmup_steps"] - 1:
                self.validation_seconds = 0.0
            if done + 1 >= SETTINGS["steps"]:
                trainer.should_stop = True
                RESULTS["precision"] = str(trainer.precision)
                RESULTS["train_window_s"] = self.step_ends[-1] - self.step_ends[SETTINGS["warmup_steps"] - 1]
                RESULTS["validation_s"] = self.validation_seconds

        def on_validation_start(self, trainer, pl_module):
            self._validation_start = time.perf_counter()

        def on_validation_end(self, trainer, pl_module):
            if trainer.state.fn == "fit":
                self.validation_seconds += time.perf_counter() - self._validation_start

    return StepTimer


def compile_training_forward(pl_module) -> None:
    """torch.compile the forward used by training steps; validation and analysis keep `.model`."""
    import torch

    compiled = torch.compile(pl_module.model)
    eager_forward = pl_module.forward
    pl_module.forward = lambda batch: (
        compiled(pl_module.model_input(batch)) if pl_module.training else eager_forward(batch)
    )


def lit_worker(args) -> dict:
    """lit_interp's own CLI, in-process, with the StepTimer appended to the config's callbacks."""
    from lit_interp.commands.train import run_cli

    SETTINGS.update(steps=args.steps, warmup_steps=args.warmup_steps, device=args.device, compile=args.compile)
    cli_args = [
        "fit",
        "--config",
        args.config,
        f"--trainer.max_steps={args.steps + 10}",
        f"--trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
    ]
    if args.precision:
        cli_args.append(f"--trainer.precision={args.precision}")
    cli_args += [f"--{override}" for override in args.set]
    if not args.with_callbacks:
        cli_args.append("--trainer.callbacks=[]")
    cli_args.append("--trainer.callbacks+=__main__.StepTimer")
    cli = run_cli(cli_args)
    steps_in_window = args.steps - args.warmup_steps
    result = {
        "steps_per_s": steps_in_window / (RESULTS["train_window_s"] - RESULTS["validation_s"]),
        "validation_share": RESULTS["validation_s"] / RESULTS["train_window_s"],
        "first_step_s": RESULTS["first_step_s"],
        "precision": RESULTS["precision"],
        "peak_mib": peak_memory_mib(args.device),
    }
    result.update(data_generation_cost(cli.datamodule, args.device, result["steps_per_s"]))
    return result


def plain_worker(args) -> dict:
    """The seed notebooks' loop (seed 004): generate, forward, loss, backward, clip, AdamW, warmup."""
    import torch

    from lit_interp.tasks.base import lr_multiplier

    config, data, task = build_task(args.config, args.set)
    model = task.model.to(args.device)
    hparams, trainer_config = task.hparams, config.get("trainer", {})
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=hparams.lr,
        betas=tuple(hparams.betas),
        weight_decay=hparams.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, hparams.warmup_steps, hparams.decay_steps, hparams.min_lr_ratio)
    )
    clip = trainer_config.get("gradient_clip_val")
    log_every = trainer_config.get("log_every_n_steps", 25)
    generator = torch.Generator(device=args.device).manual_seed(data.seed)
    forward = torch.compile(model) if args.compile else model
    bf16 = args.precision == "bf16-mixed"
    step_ends, losses = [], []
    for step in range(args.steps):
        batch = data.generate(generator, data.batch_size)
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=bf16):
            loss = task.loss(forward(task.model_input(batch)), batch)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        if step % log_every == 0:
            losses.append(loss.item())
        if step in (0, args.warmup_steps - 1, args.steps - 1):
            synchronize(args.device)
        step_ends.append(time.perf_counter())
        if step == 0:
            first_step_s = seconds_since_launch()
    window = step_ends[-1] - step_ends[args.warmup_steps - 1]
    result = {
        "steps_per_s": (args.steps - args.warmup_steps) / window,
        "first_step_s": first_step_s,
        "precision": args.precision or "32-true",
        "peak_mib": peak_memory_mib(args.device),
        "loss_first_last": [losses[0], losses[-1]],
    }
    result.update(data_generation_cost(data, args.device, result["steps_per_s"]))
    return result


def data_generation_cost(data, device: str, steps_per_s: float, batches: int = 30) -> dict:
    """What lit_interp pays per step to build a training batch on the device (fresh seeded generator included)."""
    from lit_interp.tasks.base import Stream

    data.make_batch(Stream.TRAIN, 0, data.batch_size, device)
    synchronize(device)
    start = time.perf_counter()
    for index in range(1, batches + 1):
        data.make_batch(Stream.TRAIN, index, data.batch_size, device)
    synchronize(device)
    seconds = (time.perf_counter() - start) / batches
    return {"data_ms": seconds * 1000, "data_share": seconds * steps_per_s}


def callback_share_worker(args) -> dict:
    """A full `fit` of the config as shipped; seconds inside AnalysisSnapshots.snapshot and TrainingDynamics' hooks."""
    from lit_interp.callbacks import AnalysisSnapshots, TrainingDynamics
    from lit_interp.commands.train import run_cli

    snapshot_seconds: list[float] = []
    original = AnalysisSnapshots.snapshot

    def timed_snapshot(self, trainer, pl_module, final):
        synchronize(args.device)
        start = time.perf_counter()
        original(self, trainer, pl_module, final)  # returns at once where it writes nothing
        synchronize(args.device)
        snapshot_seconds.append(time.perf_counter() - start)

    AnalysisSnapshots.snapshot = timed_snapshot
    dynamics_seconds = [0.0]

    def timed(hook):
        def wrapper(self, trainer, *rest, **kwargs):
            start = time.perf_counter()
            hook(self, trainer, *rest, **kwargs)
            dynamics_seconds[0] += time.perf_counter() - start

        return wrapper

    for name in ("on_train_start", "on_train_batch_start", "on_before_optimizer_step", "on_train_batch_end"):
        setattr(TrainingDynamics, name, timed(getattr(TrainingDynamics, name)))
    start = time.perf_counter()
    cli = run_cli(
        [
            "fit",
            "--config",
            args.config,
            "--trainer.enable_progress_bar=false",
            f"--trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
            *[f"--{override}" for override in args.set],
        ]
    )
    fit_s = time.perf_counter() - start
    written = sorted(Path(cli.trainer.log_dir, "analysis").glob("step_*.json"))
    return {
        "fit_s": fit_s,
        "snapshot_s": sum(snapshot_seconds),
        "dynamics_s": dynamics_seconds[0],
        "snapshots": len(written),
        "steps": cli.trainer.global_step,
        "slowest_snapshot_s": max(snapshot_seconds, default=0.0),
        "snapshot_seconds": [round(seconds, 4) for seconds in snapshot_seconds],
    }


def run_worker(args) -> None:
    import gc

    import __main__

    gc.disable()  # as `python -m lit_interp` starts (lit_interp/__main__.py); the CLI turns it back on

    __main__.StepTimer = make_step_timer()
    workers = {"lit": lit_worker, "plain": plain_worker, "share": callback_share_worker}
    result = workers[args.worker](args)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ---------------------------------------------------------------- parent: side by side, alternating


def launch(
    worker: str, config: str, args, precision: str | None, compile_forward: bool, with_callbacks: bool = False
) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        worker,
        "--config",
        str(ROOT / "configs" / f"{config}.yaml"),
        "--steps",
        str(args.steps),
        "--warmup-steps",
        str(args.warmup_steps),
        "--device",
        args.device,
    ]
    command += ["--precision", precision] if precision else []
    command += ["--compile"] if compile_forward else []
    command += ["--with-callbacks"] if with_callbacks else []
    command += [f"--set={override}" for override in args.set]
    with tempfile.TemporaryDirectory() as run_dir:  # lightning_logs and checkpoints land here
        environment = dict(os.environ, BENCHMARK_LAUNCH=repr(time.time()), PYTHONWARNINGS="ignore")
        done = subprocess.run(command, cwd=run_dir, env=environment, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        sys.exit(f"{worker} worker failed on {config}:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def has_callbacks(config: str) -> bool:
    import yaml

    return bool(yaml.safe_load((ROOT / "configs" / f"{config}.yaml").read_text()).get("trainer", {}).get("callbacks"))


def compare(config: str, args, precision: str | None, compile_forward: bool) -> dict:
    """Alternate plain / lit_interp (/ lit_interp with the config's callbacks) `repeats` times; medians."""
    variants = ["plain", "lit"] + (["lit+callbacks"] if has_callbacks(config) and not args.skip_callbacks else [])
    runs: dict[str, list[dict]] = {variant: [] for variant in variants}
    for repeat in range(args.repeats):
        for variant in variants if repeat % 2 == 0 else variants[::-1]:
            worker = "plain" if variant == "plain" else "lit"
            runs[variant].append(launch(worker, config, args, precision, compile_forward, variant == "lit+callbacks"))
            print(
                f"  {config} {precision or 'default'}{' compiled' if compile_forward else ''} {variant}: "
                f"{runs[variant][-1]['steps_per_s']:.1f} steps/s",
                file=sys.stderr,
                flush=True,
            )
    medians = {
        variant: {
            key: statistics.median(run[key] for run in results)
            for key in ("steps_per_s", "first_step_s", "peak_mib", "data_share", "data_ms")
        }
        for variant, results in runs.items()
    }
    medians["lit"]["validation_share"] = statistics.median(run["validation_share"] for run in runs["lit"])
    medians["lit"]["precision"] = runs["lit"][0]["precision"]
    medians["ratios"] = [
        run_lit["steps_per_s"] / run_plain["steps_per_s"] for run_lit, run_plain in zip(runs["lit"], runs["plain"])
    ]
    if "lit+callbacks" in runs:
        medians["callback_overhead"] = 1 - medians["lit+callbacks"]["steps_per_s"] / medians["lit"]["steps_per_s"]
    return medians


def items_per_step(config: str, overrides: list[str]) -> tuple[int, str]:
    """Tokens (vectors for the recurrence) the model reads per training step."""
    import yaml

    data = apply_overrides(yaml.safe_load((ROOT / "configs" / f"{config}.yaml").read_text()), overrides)["data"][
        "init_args"
    ]
    if config == "affine_recurrence":
        return data["batch_size"] * (data["seq_len"] - 1), "vectors"
    return data["batch_size"] * data["n_ctx"], "tokens"


def table_rows(config: str, label: str, medians: dict, overrides: list[str]) -> list[str]:
    per_step, unit = items_per_step(config, overrides)
    lit, plain = medians["lit"], medians["plain"]
    ratio = lit["steps_per_s"] / plain["steps_per_s"]
    spread = f"{min(medians['ratios']):.2f}–{max(medians['ratios']):.2f}"
    overhead = f"{medians['callback_overhead']:.1%}" if "callback_overhead" in medians else "not measured"
    rows = []
    for name, run in (("lit_interp", lit), ("plain loop", plain)):
        rows.append(
            f"| {config} | {label} | {name} | {run['steps_per_s']:.1f} | "
            f"{run['steps_per_s'] * per_step:,.0f} {unit} | "
            f"{run['peak_mib']:.0f} | {run['first_step_s']:.2f} | {run['data_share']:.1%} "
            f"({run['data_ms']:.2f} ms) | "
            + (
                f"**{ratio:.3f}** ({spread}) | {lit['validation_share']:.1%} | {overhead} |"
                if name == "lit_interp"
                else " | | |"
            )
        )
    return rows


TABLE_HEADER = [
    "| config | precision | trainer | steps/s | items/s | peak MiB | first step s | data gen share (ms/batch) | "
    "lit/plain steps/s (range) | val share | callbacks overhead |",
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
]


def benchmark_table(args) -> list[str]:
    settings = [(None, False)] if args.device == "cpu" else [("32-true", False), ("bf16-mixed", False)]
    if args.compile:
        settings += [("32-true" if args.device == "cpu" else "bf16-mixed", True)]
    rows = list(TABLE_HEADER)
    for config in args.configs:
        for precision, compile_forward in settings:
            medians = compare(config, args, precision, compile_forward)
            label = (precision or "32-true") + (" + compile" if compile_forward else "")
            new_rows = table_rows(config, label, medians, args.set)
            print("\n".join(new_rows), file=sys.stderr, flush=True)  # partial results survive a time limit
            rows += new_rows
    return rows


# ---------------------------------------------------------------- time to quality and --help


def time_to_quality(config: str, args) -> dict:
    """Wall time of `python -m lit_interp fit --config ...` until the seed's figure is reached."""
    metric, mode, threshold = QUALITY[config]
    command = [
        sys.executable,
        "-m",
        "lit_interp",
        "fit",
        "--config",
        str(ROOT / "configs" / f"{config}.yaml"),
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks+=lightning.pytorch.callbacks.EarlyStopping",
        f"--trainer.callbacks.monitor={metric}",
        f"--trainer.callbacks.mode={mode}",
        f"--trainer.callbacks.stopping_threshold={threshold * (1 - 1e-9) if mode == 'max' else threshold * (1 + 1e-9)}",
        "--trainer.callbacks.patience=1000000",
        f"--trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
    ]
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        done = subprocess.run(
            command, cwd=run_dir, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore")
        )
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"fit failed on {config}:\n{done.stderr[-3000:]}")
        step, value = last_scalar(Path(run_dir) / "lightning_logs", metric)
    reached = value >= threshold if mode == "max" else value <= threshold
    return {"wall_s": wall, "step": step, "value": value, "reached": reached, "metric": metric, "threshold": threshold}


def last_scalar(log_dir: Path, tag: str) -> tuple[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(log_dir.glob("version_*"))), size_guidance={"scalars": 0})
    events.Reload()
    last = events.Scalars(tag)[-1]
    return last.step, last.value


def help_wall_times(repeats: int = 5) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lit_interp", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=CONFIGS, choices=CONFIGS, help="config names under configs/")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats: a few minutes on CPU")
    parser.add_argument("--steps", type=int, help="training steps per run (default 60 quick, 200 full)")
    parser.add_argument(
        "--warmup-steps", type=int, help="steps left out of the timing window (default 10 quick, 20 full)"
    )
    parser.add_argument("--repeats", type=int, help="alternating repeats per variant (default 3 quick, 5 full)")
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd training forward")
    parser.add_argument("--load", type=int, default=0, help="busy-loop processes saturating the cores throughout")
    parser.add_argument(
        "--skip-callbacks", action="store_true", help="leave out the run with the config's analysis callbacks"
    )
    parser.add_argument(
        "--ttq", action="store_true", help="time to quality (whole process) instead of the steps/s table"
    )
    parser.add_argument("--ttq-repeats", type=int, default=1)
    parser.add_argument(
        "--callback-share", action="store_true", help="share of a full default-length fit spent in analysis snapshots"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for both trainers, e.g. data.init_args.batch_size=1024 (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--worker", choices=["lit", "plain", "share"], help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--with-callbacks", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = args.steps or (60 if args.quick else 200)
    args.warmup_steps = args.warmup_steps or (10 if args.quick else 20)
    args.repeats = args.repeats or (3 if args.quick else 5)
    if args.worker:
        return run_worker(args)
    with busy_cores(args.load):
        measure(args)


def measure(args) -> None:
    print(f"# {args.load} busy-loop processes", flush=True)
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {load_average()}, {os.cpu_count()} CPUs",
        flush=True,
    )
    if args.ttq:
        print(
            "| config | seed's figure | wall s (whole process) | reached at step | value | load "
            "|\n|---|---|---:|---:|---:|---|"
        )
        for config in args.configs:
            for _ in range(args.ttq_repeats):
                result = time_to_quality(config, args)
                comparison = (
                    "≥"
                    if result["reached"] and QUALITY[config][1] == "max"
                    else "≤"
                    if result["reached"]
                    else "NOT reached:"
                )
                print(
                    f"| {config} | {result['metric']} {comparison} {result['threshold']} | "
                    f"{result['wall_s']:.1f} | {result['step']} | {result['value']:.5g} | {load_average()} |",
                    flush=True,
                )
        return
    if args.callback_share:
        repeats = args.repeats or 1
        print(
            f"{repeats} run(s) per config; medians (and the range of the share)\n\n"
            "| config | steps | fit s | snapshots | in snapshots s (slowest) | in TrainingDynamics s | "
            "callbacks' share of fit (range) | load |\n|---|---:|---:|---:|---:|---:|---:|---|"
        )
        for config in args.configs:
            results = [launch("share", config, args, None, False) for _ in range(repeats)]
            shares = [(r["snapshot_s"] + r["dynamics_s"]) / r["fit_s"] for r in results]

            def median(key: str, results: list[dict] = results) -> float:
                return statistics.median(r[key] for r in results)

            print(
                f"| {config} | {results[0]['steps']} | {median('fit_s'):.1f} | {results[0]['snapshots']} | "
                f"{median('snapshot_s'):.2f} ({median('slowest_snapshot_s'):.2f}) | {median('dynamics_s'):.2f} | "
                f"{statistics.median(shares):.1%} ({min(shares):.1%}-{max(shares):.1%}) | {load_average()} |",
                flush=True,
            )
        return
    help_times = help_wall_times()
    print(f"`python -m lit_interp --help`: median {statistics.median(help_times):.2f} s of {len(help_times)}")
    print(
        f"{args.steps} steps per run, the first {args.warmup_steps} untimed, {args.repeats} alternating "
        "repeats; medians\n"
    )
    rows = benchmark_table(args)
    print("\n".join(rows))
    print(f"\n# load average at the end: {load_average()}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "help_s": help_times}, indent=1))


if __name__ == "__main__":
    main()
