"""Sweep figures across storages: a search of real fits by 4 workers in 2 directories (completed, duplicates, lost),
the storage's bookkeeping time per trial (SQLite, journal, PostgreSQL), the time from a worker's kill to another's
takeover, and `analyze --runs` over many synthetic runs (wall time, peak memory, report size).

  python scripts/benchmark_storages.py search      [--postgres URL] [--n_trials 32] [--workers 4]
  python scripts/benchmark_storages.py bookkeeping [--postgres URL] [--n_trials 32] [--workers 4]
  python scripts/benchmark_storages.py takeover   [--postgres URL] [--grace_period 10]
  python scripts/benchmark_storages.py many_runs  [--runs 500]

Without --postgres a throwaway server is started with .ci/postgres.sh (and removed). Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "prev_token_digits.yaml")
TINY = [
    "--model.init_args.d_model=16",
    "--trainer.max_steps=20",
    "--trainer.val_check_interval=10",
    "--checkpoint.every_n_train_steps=10",
    "--trainer.callbacks=[]",
    "--trainer.enable_model_summary=false",
]
SPACE = "model.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
# The child of `bookkeeping`: no training, a metrics.csv for the objective; what is left is the storage's work.
NO_FIT = (
    "import pathlib, sys\n"
    "run = pathlib.Path(sys.argv[1]) / 'lightning_logs' / 'version_0'\n"
    "run.mkdir(parents=True, exist_ok=True)\n"
    "(run / 'metrics.csv').write_text('step,val/loss\\n1,1.0\\n')\n"
)


def scratch() -> Path:
    """A temporary directory, removed when the benchmark ends."""
    path = Path(tempfile.mkdtemp(prefix="lit_interp_bench_"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@contextlib.contextmanager
def postgres(url: str | None):
    if url:
        yield url
        return
    directory = tempfile.mktemp(prefix="litpg.")
    started = subprocess.run(
        ["bash", str(ROOT / ".ci" / "postgres.sh"), "start", directory], capture_output=True, text=True
    )
    if started.returncode != 0:
        sys.exit(f"could not start PostgreSQL: {started.stderr.strip()}")
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(ROOT / ".ci" / "postgres.sh"), "stop", directory], capture_output=True)


def fresh_database(server: str, name: str) -> str:
    import sqlalchemy
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def storages(work: Path, server: str, run: str) -> dict[str, str]:
    return {
        "SQLite": f"sqlite:///{work / f'{run}.db'}",
        "journal": f"journal:{work / f'{run}.journal'}",
        "PostgreSQL": fresh_database(server, f"bench_{run}_{os.getpid()}"),
    }


def sweep_command(directory: Path, storage: str, n_trials: int, *extra: str) -> list[str]:
    directory.parent.mkdir(parents=True, exist_ok=True)
    space = directory.parent / "space.yaml"
    space.write_text(SPACE)
    return [
        *[sys.executable, "-m", "lit_interp", "sweep", str(directory), "--config", CONFIG, "--study_name", "bench"],
        *["--space", str(space), "--n_trials", str(n_trials), "--storage", storage, *extra],
    ]


def workers(
    work: Path, storage: str, n_trials: int, count: int, worker: list[str] | None = None
) -> tuple[float, list[str]]:
    """`count` workers, taking turns between two sweep directories; (wall seconds, their outputs)."""
    started = time.perf_counter()
    processes = []
    for directory in ("a", "b") * (count // 2) + ("a",) * (count % 2):
        command = sweep_command(work / directory / "sweep", storage, n_trials, *TINY)
        if worker is not None:
            command = [*worker, *command[4:]]  # this script's worker mode instead of `-m lit_interp sweep`
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    for process in processes:
        out, err = process.communicate()
        if process.returncode != 0:
            sys.exit(f"a worker failed:\n{err[-3000:]}")
        outputs.append(out)
    return time.perf_counter() - started, outputs


def tally(storage: str, work: Path, n_trials: int) -> dict[str, int]:
    """Completed, duplicated (a trial directory in both sweep directories, or a trial number run twice) and lost."""
    import optuna

    from lit_interp.optuna_storage import open_storage

    trials = optuna.load_study(study_name="bench", storage=open_storage(storage)).get_trials()
    latest = {t.system_attrs.get("failed_trial", t.number): t for t in trials}
    in_both = {p.name for p in (work / "a" / "sweep").glob("trial_*")} & {
        p.name for p in (work / "b" / "sweep").glob("trial_*")
    }
    complete = sum(t.state.name == "COMPLETE" for t in latest.values())
    return {"trials": len(latest), "completed": complete, "duplicates": len(in_both), "lost": n_trials - complete}


def search(args: argparse.Namespace) -> None:
    with postgres(args.postgres) as server:
        work = scratch()
        storage = fresh_database(server, f"bench_search_{os.getpid()}")
        wall, _ = workers(work, storage, args.n_trials, args.workers)
        counts = tally(storage, work, args.n_trials)
        print(json.dumps({"storage": "PostgreSQL", "wall_s": round(wall, 1), **counts}))


def bookkeeping_worker(argv: list[str]) -> None:
    """A sweep worker whose children do nothing, timing its storage work: claiming (lock, ask, attributes, a
    heartbeat) and telling (attributes, the result); prints (trials, seconds) as JSON on exit."""
    from lit_interp.cli import main
    from lit_interp.commands.sweep import workers

    spent = {"trials": 0, "seconds": 0.0}

    def timed(function, count=False):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent["seconds"] += time.perf_counter() - started
                spent["trials"] += count

        return wrapper

    workers.claim = timed(workers.claim)
    workers.Worker.finish = timed(workers.Worker.finish, count=True)
    workers.fit_command = lambda sweep, directory, number, values, resume: [
        sys.executable,
        "-c",
        NO_FIT,
        str(directory),
    ]
    try:
        main(["sweep", *argv])
    finally:
        print("BOOKKEEPING " + json.dumps(spent), flush=True)


def bookkeeping(args: argparse.Namespace) -> None:
    with postgres(args.postgres) as server:
        work = scratch()
        for name, storage in storages(work, server, "bookkeeping").items():
            run = work / name
            run.mkdir()
            mode = [sys.executable, __file__, "bookkeeping_worker"]
            wall, outputs = workers(run, storage, args.n_trials, args.workers, mode)
            spent = [
                json.loads(line.split(" ", 1)[1])
                for out in outputs
                for line in out.splitlines()
                if line.startswith("BOOKKEEPING")
            ]
            trials, seconds = sum(s["trials"] for s in spent), sum(s["seconds"] for s in spent)
            counts = tally(storage, run, args.n_trials)
            print(
                json.dumps(
                    {
                        "storage": name,
                        "ms_per_trial": round(1000 * seconds / trials, 1),
                        "wall_s": round(wall, 1),
                        **counts,
                    }
                )
            )


def takeover(args: argparse.Namespace) -> None:
    """Worker a runs a long trial, worker b (another directory) waits; a is killed; b takes the trial over."""
    with postgres(args.postgres) as server:
        work = scratch()
        storage = fresh_database(server, f"bench_takeover_{os.getpid()}")
        beat = ["--heartbeat", str(args.heartbeat), "--grace_period", str(args.grace_period)]
        long = [*TINY, "--trainer.max_steps=100000", "--checkpoint.every_n_train_steps=5"]
        first = subprocess.Popen(
            sweep_command(work / "a" / "sweep", storage, 1, *beat, *long), stdout=subprocess.DEVNULL
        )
        while not list((work / "a" / "sweep").glob("trial_*/lightning_logs/version_0/checkpoints/last.ckpt")):
            time.sleep(0.05)
        command = sweep_command(work / "b" / "sweep", storage, 1, *beat, *long)
        second = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        time.sleep(2 * args.heartbeat + 5)  # b has started, found nothing to start, and waits
        first.send_signal(signal.SIGKILL)
        killed = time.perf_counter()
        for line in second.stdout:
            if "takes over trial" in line:
                took = round(time.perf_counter() - killed, 2)
                print(
                    json.dumps(
                        {"grace_period_s": args.grace_period, "heartbeat_s": args.heartbeat, "kill_to_takeover_s": took}
                    )
                )
                break
        second.kill()
        second.communicate()


MEASURED = (
    "import resource, runpy, sys\n"
    "sys.argv = ['lit_interp', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('lit_interp', run_name='__main__')\n"
    "finally:\n"
    "    print('PEAK_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


def many_runs(args: argparse.Namespace) -> None:
    work = scratch()
    runs = work / "runs"
    generate = [sys.executable, str(ROOT / "scripts" / "synthetic_runs.py"), str(runs), "--runs", str(args.runs)]
    subprocess.run([*generate, "--study"], check=True)
    started = time.perf_counter()
    analyze = subprocess.run(
        [sys.executable, "-c", MEASURED, "analyze", "--runs", str(runs)], capture_output=True, text=True, check=True
    )
    wall = time.perf_counter() - started
    peak = int(analyze.stderr.split("PEAK_KIB")[-1].split()[0]) / 1024
    report = runs / "runs_report"
    figures = {
        "runs": args.runs,
        "wall_s": round(wall, 1),
        "peak_MiB": round(peak),
        "report_MB": round((report / "report.html").stat().st_size / 1e6, 2),
        "csv_rows": (report / "runs.csv").read_text().count("\n") - 1,
    }
    print(json.dumps(figures))


def main() -> None:
    if sys.argv[1:2] == ["bookkeeping_worker"]:
        return bookkeeping_worker(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figure", choices=("search", "bookkeeping", "takeover", "many_runs"))
    parser.add_argument("--postgres", help="a PostgreSQL server's URL (default: start a throwaway one)")
    parser.add_argument("--n_trials", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4, help="workers, in two sweep directories (default 4)")
    parser.add_argument("--heartbeat", type=int, default=2)
    parser.add_argument("--grace_period", type=int, default=10)
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    {"search": search, "bookkeeping": bookkeeping, "takeover": takeover, "many_runs": many_runs}[args.figure](args)


if __name__ == "__main__":
    main()
