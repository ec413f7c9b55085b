"""The thread policy measured: `python -m lit_interp fit` with lit_interp's choice, 1 thread and every core, on a
quiet machine and with every core saturated by busy loops this script starts and stops itself.

Each run is a whole process (`python -m lit_interp fit --config X ...` from the shell); the variants alternate
(their order rotates every repeat) and the table gives medians, ranges and each variant's ratio to "every core",
which is what PyTorch does by default and what lit_interp did before the policy.

    python scripts/benchmark_threads.py                          # the default fit, as shipped, quiet and loaded
    python scripts/benchmark_threads.py --configs bos_ints_mlp affine_recurrence --steps 60
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from busy_loop import busy_cores, load_average

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = "default"  # `python -m lit_interp fit` with no config: the digits task as shipped, analysis on
CONFIGS = [DEFAULT, "prev_token_digits", "bos_ints_attn_only", "bos_ints_mlp", "affine_recurrence", "induction"]


def fit_command(config: str, threads: str, steps: int | None) -> list[str]:
    command = [sys.executable, "-m", "lit_interp", "fit", "--trainer.enable_progress_bar=false"]
    if config != DEFAULT:
        command += ["--config", str(ROOT / "lit_interp" / "configs" / f"{config}.yaml"), "--trainer.callbacks=[]"]
    if steps is not None:
        command += [f"--trainer.max_steps={steps}"]
    return command + ([] if threads == "auto" else [f"--threads={threads}"])


def timed_fit(config: str, threads: str, steps: int | None) -> tuple[float, str]:
    """Wall seconds of one whole fit, and the thread choice it printed."""
    environment = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    environment.pop("LIT_INTERP_THREADS", None)
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        done = subprocess.run(
            fit_command(config, threads, steps), cwd=directory, env=environment, capture_output=True, text=True
        )
        wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"fit failed ({config}, threads {threads}):\n{done.stderr[-2000:]}")
    choice = next((line for line in done.stderr.splitlines() if "lit_interp: training" in line), "")
    return wall, choice.split(" on cpu x1, ")[-1].split(" (")[0] if choice else "?"


def measure(config: str, variants: list[str], repeats: int, steps: int | None) -> dict[str, dict]:
    walls: dict[str, list[float]] = {variant: [] for variant in variants}
    chosen: dict[str, str] = {}
    loads = []
    for repeat in range(repeats):
        order = variants[repeat % len(variants) :] + variants[: repeat % len(variants)]
        for variant in order:
            wall, chosen[variant] = timed_fit(config, variant, steps)
            walls[variant].append(wall)
        loads.append(os.getloadavg()[0])
    return {
        variant: {"walls": walls[variant], "chosen": chosen[variant], "load": statistics.median(loads)}
        for variant in variants
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=[DEFAULT], choices=CONFIGS)
    parser.add_argument("--steps", type=int, help="max_steps of each fit (default: the config's own)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating runs of each variant (default 5)")
    parser.add_argument(
        "--loads",
        nargs="+",
        type=int,
        default=[0, os.cpu_count() or 1],
        help="busy-loop processes (default 0 and nproc)",
    )
    args = parser.parse_args()
    cores = str(len(os.sched_getaffinity(0)))
    variants = ["auto", "1", cores] if cores != "1" else ["auto", "1"]
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cores} cores, load before: {load_average()}")
    print(f"# {args.repeats} alternating runs per variant; medians (range); ratio = every core's wall / this one's\n")
    print("| config | busy loops | threads | chose | wall s | ratio to every core | load (1 min) |")
    print("|---|---:|---|---|---:|---:|---:|")
    for load in args.loads:
        with busy_cores(load):
            time.sleep(2 if load else 0)
            for config in args.configs:
                results = measure(config, variants, args.repeats, args.steps)
                baseline = statistics.median(results[cores]["walls"])
                for variant, result in results.items():
                    walls = result["walls"]
                    median = statistics.median(walls)
                    print(
                        f"| {config} | {load} | {variant} | {result['chosen']} | {median:.1f} "
                        f"({min(walls):.1f}-{max(walls):.1f}) | {baseline / median:.2f} | {result['load']:.1f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
