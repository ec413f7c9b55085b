"""Write many synthetic runs for `analyze --runs` at scale: a sweep directory of N trial runs, each with TensorBoard
event files, analysis snapshots and a config.yaml, and (with --study) the Optuna study and sweep.json of a search.

Nothing is trained: each run's curves and head scores follow a formation curve with a random step, so the report
has findings and formation steps to show. Usage:
  python scripts/synthetic_runs.py OUT --runs 500 --study
  python -m lit_interp analyze --runs OUT
"""

from __future__ import annotations

import argparse
import json
import math
import random
import uuid
from pathlib import Path

HEADS = [f"L{layer}H{head}" for layer in range(2) for head in range(4)]
SCORES = ("prev_token_score", "induction_score", "bos_score")


def score(step: int, formed_at: float, final: float) -> float:
    """A sigmoid in log-step rising to `final` around `formed_at`."""
    return final / (1.0 + math.exp(-6.0 * (math.log(max(step, 1)) - math.log(formed_at))))


def write_events(run: Path, steps: int, val_every: int, formed_at: float, lr: float) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run))
    for step in range(10, steps + 1, 10):
        loss = 2.3 * math.exp(-step * lr * 3) + 0.05 + 0.3 * (step < formed_at)
        writer.add_scalar("train/loss", loss, step)
        if step % val_every == 0:
            writer.add_scalar("val/loss", loss * 1.05, step)
            writer.add_scalar("val/acc", 1.0 - min(1.0, loss / 2.4), step)
    writer.close()


def write_snapshots(run: Path, steps: int, count: int, formed: dict[str, float], rng: random.Random) -> None:
    import torch

    from lit_interp.snapshots import write_snapshot

    schedule = sorted({max(1, round(steps ** (k / count))) for k in range(1, count + 1)})
    finals = {(head, name): rng.uniform(0.05, 0.98) for head in HEADS for name in SCORES}
    for step in schedule:
        heads = {head: {name: score(step, formed[head], finals[head, name]) for name in SCORES} for head in HEADS}
        summary = {"step": step, "task": "Synthetic", "loss": 2.0 / math.sqrt(step), "heads": heads}
        tensors = {"attention.L0H0": torch.rand(8, 8)}
        write_snapshot(run, step, summary, tensors)


def write_run(directory: Path, number: int, args: argparse.Namespace, rng: random.Random) -> dict:
    run = directory / f"trial_{number:04d}" / "lightning_logs" / "version_0"
    run.mkdir(parents=True)
    lr = 10 ** rng.uniform(-4, -2)
    d_model = rng.choice([32, 64, 128])
    formed = {head: rng.uniform(20, args.steps) for head in HEADS}
    config = {
        "seed_everything": number,
        "model": {"class_path": "Synthetic", "init_args": {"lr": lr, "d_model": d_model}},
        "data": {"init_args": {"seed": number}},
        "trainer": {"max_steps": args.steps, "default_root_dir": str(run.parents[1])},
    }
    (run / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    write_events(run, args.steps, args.val_every, formed["L1H0"], lr)
    write_snapshots(run, args.steps, args.snapshots, formed, rng)
    return {"lr": lr, "d_model": d_model, "value": 2.3 * math.exp(-args.steps * lr * 3) + 0.05}


def write_study(directory: Path, params: list[dict]) -> None:
    """A COMPLETE trial per run in a SQLite study, and the sweep.json `sweep --space` would have written."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{(directory / 'optuna.db').resolve()}"
    study = optuna.create_study(storage=storage, study_name=directory.name)
    distributions = {
        "model.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
        "model.d_model": optuna.distributions.CategoricalDistribution([32, 64, 128]),
    }
    study.add_trials(
        optuna.trial.create_trial(
            params={"model.lr": p["lr"], "model.d_model": p["d_model"]},
            distributions=distributions,
            value=p["value"],
            user_attrs={"run_dir": f"trial_{number:04d}/lightning_logs/version_0"},
        )
        for number, p in enumerate(params)
    )
    space = {
        "model.init_args.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "model.init_args.d_model": {"type": "categorical", "choices": [32, 64, 128]},
    }
    info = {"study_name": directory.name, "storage": storage, "directory_id": uuid.uuid4().hex}
    info |= {"config": "synthetic", "overrides": [], "seeds": None, "space": space, "objective": "val/loss"}
    info |= {"direction": "minimize", "prune": False, "heartbeat": 10, "grace_period": 60}
    (directory / "sweep.json").write_text(json.dumps(info, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the directory to fill (must not exist)")
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--steps", type=int, default=2000, help="training steps per run (default 2000)")
    parser.add_argument("--val_every", type=int, default=100, help="validation interval (default 100)")
    parser.add_argument("--snapshots", type=int, default=12, help="log-spaced snapshots per run (default 12)")
    parser.add_argument("--study", action="store_true", help="also write an Optuna study with a trial per run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True)
    rng = random.Random(args.seed)
    params = [write_run(args.out, number, args, rng) for number in range(args.runs)]
    if args.study:
        write_study(args.out, params)
    print(f"{args.runs} runs in {args.out}")


if __name__ == "__main__":
    main()
