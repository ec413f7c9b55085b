"""Report sizes and `analyze` wall times for each shipped config, trained as shipped.

For each config: `python -m lit_interp fit --config CONFIG` in a fresh directory, then
`analyze --run` on its run and `analyze --ckpt_path` on its last checkpoint, each a whole
process, timed from the shell's side; the table gives each report's size and the run report's
number of snapshots.

    python scripts/benchmark_reports.py                          # all four configs (~10 min, 2 cores)
    python scripts/benchmark_reports.py --configs prev_token_digits --keep
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["prev_token_digits", "bos_ints_attn_only", "bos_ints_mlp", "affine_recurrence"]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def megabytes(path: Path) -> float:
    return path.stat().st_size / 1e6


def measure(config: str, work: Path) -> dict:
    lit_interp = [sys.executable, "-m", "lit_interp"]
    fit_s = timed([*lit_interp, "fit", "--config", str(ROOT / "configs" / f"{config}.yaml"), *QUIET], work)
    run = work / "lightning_logs" / "version_0"
    run_s = timed([*lit_interp, "analyze", "--run", str(run)], work)
    run_report = run / "analysis_report" / "report.html"
    checkpoint = run / "checkpoints" / "last.ckpt"
    checkpoint_s = timed([*lit_interp, "analyze", "--ckpt_path", str(checkpoint)], work)
    checkpoint_report = next(run.glob("checkpoints/analysis_*/report.html"))
    snapshots = len(json.loads((run / "analysis_report" / "trajectory.json").read_text())["steps"])
    return {
        "fit_s": fit_s,
        "snapshots": snapshots,
        "run_mb": megabytes(run_report),
        "run_s": run_s,
        "checkpoint_mb": megabytes(checkpoint_report),
        "checkpoint_s": checkpoint_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=CONFIGS, choices=CONFIGS)
    parser.add_argument("--keep", action="store_true", help="keep each config's directory (printed)")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    print(
        "| config | fit s | snapshots | run report MB | `analyze --run` s | checkpoint report MB | "
        "`analyze --ckpt_path` s |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    for config in args.configs:
        work = Path(tempfile.mkdtemp(prefix=f"lit_interp_reports_{config}_"))
        try:
            r = measure(config, work)
        finally:
            if args.keep:
                print(f"kept {work}", file=sys.stderr)
            else:
                shutil.rmtree(work, ignore_errors=True)
        print(
            f"| {config} | {r['fit_s']:.1f} | {r['snapshots']} | {r['run_mb']:.2f} | {r['run_s']:.1f} | "
            f"{r['checkpoint_mb']:.2f} | {r['checkpoint_s']:.1f} |",
            flush=True,
        )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
