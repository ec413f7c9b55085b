"""Wall time of a seed sweep against the same fits run one after another, and of `--jobs 2`; and a search's result.

python scripts/benchmark_sweep.py --repeats 3                 # quiet: 8 seeds of the default config
python scripts/benchmark_sweep.py --repeats 3 --load 2        # with 2 busy loops saturating the cores
python scripts/benchmark_sweep.py --repeats 3 --cold          # also the sweeps with LIT_INTERP_SWEEP_COLD=1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from busy_loop import busy_cores, load_average

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def children_cpu() -> float:
    """CPU seconds of every finished descendant process: what the work cost, whatever else the machine runs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(command: list[str], cwd: Path, environment: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds the command took; its output is dropped, a failure stops the benchmark."""
    started, cpu = time.perf_counter(), children_cpu()
    result = subprocess.run(
        command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False, env=environment
    )
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    return time.perf_counter() - started, children_cpu() - cpu


def sequential_fits(config: str, seeds: list[int], work: Path) -> tuple[float, float]:
    """`fit` once per seed, one after another, each a fresh process: what a sweep replaces."""
    wall = cpu = 0.0
    for seed in seeds:
        seeded = [
            f"--seed_everything={seed}",
            f"--data.init_args.seed={seed}",
            f"--trainer.default_root_dir=fit_{seed}",
        ]
        took = run([sys.executable, "-m", "lit_interp", "fit", "--config", config, *seeded, *QUIET], work)
        wall, cpu = wall + took[0], cpu + took[1]
    return wall, cpu


def sweep(config: str, seeds: list[int], jobs: int, work: Path, name: str, cold: bool = False) -> tuple[float, float]:
    seed_list = ",".join(map(str, seeds))
    command = [sys.executable, "-m", "lit_interp", "sweep", name, "--config", config, "--seeds", seed_list]
    environment = dict(os.environ, LIT_INTERP_SWEEP_COLD="1") if cold else None
    return run([*command, "--jobs", str(jobs), *QUIET[1:]], work, environment)


def timing(args: argparse.Namespace) -> None:
    """Each mode `--repeats` times, alternating the modes so a busy machine weighs on each alike."""
    seeds = list(range(args.seeds))
    modes = {
        "sequential fits": lambda w: sequential_fits(args.config, seeds, w),
        "sweep": lambda w: sweep(args.config, seeds, 1, w, "sweep"),
        "sweep --jobs 2": lambda w: sweep(args.config, seeds, 2, w, "sweep"),
    }
    if args.cold:
        modes["sweep, cold trials"] = lambda w: sweep(args.config, seeds, 1, w, "sweep", cold=True)
        modes["sweep --jobs 2, cold trials"] = lambda w: sweep(args.config, seeds, 2, w, "sweep", cold=True)
    times: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
    for repeat in range(args.repeats):
        for mode, measure in modes.items():
            work = Path(tempfile.mkdtemp(prefix="lit_interp_sweep_bench_"))
            try:
                times[mode].append(measure(work))
            finally:
                if args.keep:
                    print(f"kept {work}")
                else:
                    shutil.rmtree(work, ignore_errors=True)
            wall, cpu = times[mode][-1]
            print(f"repeat {repeat}: {mode}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    base_wall = statistics.median(wall for wall, _ in times["sequential fits"])
    base_cpu = statistics.median(cpu for _, cpu in times["sequential fits"])
    print(
        f"\n{len(seeds)} seeds of {args.config}, medians of {args.repeats} alternating runs, {args.load} busy loops, "
        f"load average {load_average()}:"
    )
    print("| mode | wall time (range) | / sequential | CPU time | / sequential |\n|---|---:|---:|---:|---:|")
    for mode, values in times.items():
        walls = [w for w, _ in values]
        wall, cpu = statistics.median(walls), statistics.median(c for _, c in values)
        print(
            f"| {mode} | {wall:.1f} s ({min(walls):.1f}-{max(walls):.1f}) | {wall / base_wall:.2f} | {cpu:.1f} s | "
            f"{cpu / base_cpu:.2f} |"
        )


def search(args: argparse.Namespace) -> None:
    """A TPE search over lr and d_model minimising the first validation step at which val/acc reaches the target."""
    from lit_interp import runlogs

    work = Path(args.out or tempfile.mkdtemp(prefix="lit_interp_search_"))
    work.mkdir(parents=True, exist_ok=True)
    space = work / "space.yaml"
    space.write_text(
        "model.init_args.lr: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}\n"
        "model.init_args.d_model: {type: categorical, choices: [32, 64, 128, 256]}\n"
    )
    config = str(ROOT / "configs" / "bos_ints_attn_only.yaml")
    command = [
        sys.executable,
        "-m",
        "lit_interp",
        "sweep",
        "search",
        "--config",
        config,
        "--space",
        str(space),
        "--n_trials",
        str(args.n_trials),
        "--objective",
        f"reach:val/acc>={args.target}",
        "--jobs",
        str(args.jobs),
        "--trainer.callbacks=[]",
    ]
    elapsed, _ = run(command, work)
    rows = []
    for trial_dir in sorted((work / "search").glob("trial_*")):
        steps, values = runlogs.read_scalars(trial_dir / "lightning_logs" / "version_0").get("val/acc", ([], []))
        reached = next((step for step, value in zip(steps, values) if value >= args.target), None)
        command_line = (trial_dir / "command.txt").read_text()
        params = {
            key: value
            for key, value in (
                arg.split("=", 1) for arg in command_line.split() if arg.startswith("--model.init_args.") and "=" in arg
            )
        }
        rows.append(
            {
                "trial": trial_dir.name,
                **params,
                "final val/acc": values[-1] if values else None,
                f"first step >= {args.target}": reached,
            }
        )
    print(json.dumps(rows, indent=1))
    print(f"{args.n_trials} trials in {elapsed:.0f} s; runs in {work / 'search'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--config", default=str(ROOT / "configs" / "prev_token_digits.yaml"), help="config of the seed sweep"
    )
    parser.add_argument("--seeds", type=int, default=8, help="seeds in the timing (default 8)")
    parser.add_argument("--repeats", type=int, default=1, help="times each mode is timed, alternating (default 1)")
    parser.add_argument("--search", action="store_true", help="run the bos_ints_attn_only search instead of the timing")
    parser.add_argument("--n_trials", type=int, default=20, help="trials of --search (default 20)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel trials of --search (default 1)")
    parser.add_argument("--target", type=float, default=0.989, help="val/acc that --search times (the seed's figure)")
    parser.add_argument("--keep", action="store_true", help="keep the timing's run directories (printed) for a look")
    parser.add_argument("--out", help="directory of --search's sweep (default: a new temporary directory)")
    parser.add_argument("--load", type=int, default=0, help="busy-loop processes running throughout (default 0)")
    parser.add_argument("--cold", action="store_true", help="also time the sweeps with a fresh interpreter per trial")
    args = parser.parse_args()
    with busy_cores(args.load):
        search(args) if args.search else timing(args)


if __name__ == "__main__":
    main()
