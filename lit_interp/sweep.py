"""`python -m lit_interp sweep`: seed studies and hyperparameter searches on Optuna, each trial an ordinary fit."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from lit_interp.errors import ConfigError

DESCRIPTION = """Run many fits as one Optuna study: one per seed (--seeds), or sampled from a search space (--space).

Each trial is `python -m lit_interp fit --config CONFIG OVERRIDES...` in a child process, its run in
SWEEP_DIR/trial_<4 digits>/lightning_logs/version_0. Trials live in an Optuna storage (default
sqlite:///SWEEP_DIR/optuna.db); every worker that runs the same command shares them. A killed sweep,
run again, keeps finished trials and continues a cut-off trial from its last.ckpt.

examples:
  python -m lit_interp sweep sweeps/seeds --config configs/bos_ints_attn_only.yaml --seeds 0-7 --jobs 2
  python -m lit_interp sweep sweeps/lr --config configs/bos_ints_attn_only.yaml --space space.yaml --n_trials 20
  python -m lit_interp sweep sweeps/lr ... --storage journal:/shared/lr.journal    (same command on every worker)
Options of fit (--model.init_args.lr=..., --trainer.max_steps=...) are passed on to every trial.
"""

# Where the child's runs go: <trial dir>/lightning_logs/version_0; the one place that names the flag.
RUN_ROOT_FLAG = "--trainer.default_root_dir"
FIT_OPTION = re.compile(
    r"--(model|data|trainer|checkpoint|seed_everything|optimizer|lr_scheduler)\b[\w.+]*=.*", re.DOTALL
)
SCALAR_TYPES = (bool, int, float, str, type(None))
CROSSING = re.compile(r"crossing:(\w+):(L\d+H\d+):([-+0-9.eE]+)")
REACH = re.compile(r"reach:([\w/.-]+)(>=|<=)([-+0-9.eE]+)")
NAN, INF = float("nan"), float("inf")


@dataclass(frozen=True)
class Sweep:
    """What a sweep command asks for; `definition()` is what every worker of one study must agree on."""

    directory: Path
    config: str
    overrides: tuple[str, ...]
    seeds: tuple[int, ...] | None
    space: dict[str, dict[str, Any]] | None
    n_trials: int
    objective: str
    direction: str
    storage: str
    study_name: str
    jobs: int
    prune: bool
    sampler_seed: int

    def definition(self) -> dict[str, Any]:
        keys = ("config", "overrides", "seeds", "space", "objective", "direction", "prune")
        return json.loads(json.dumps({key: value for key, value in asdict(self).items() if key in keys}))


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other lit_interp error
        raise ConfigError(f"sweep: {message}; see python -m lit_interp sweep --help")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = Parser(
        prog="python -m lit_interp sweep",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("directory", type=Path, help="the sweep directory: trial runs, and the default SQLite storage")
    parser.add_argument(
        "--config", required=True, help="the config every trial fits, e.g. configs/bos_ints_attn_only.yaml"
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--seeds", help="one trial per seed: 0-7, or 0,3,5 (sets seed_everything and data.init_args.seed)"
    )
    what.add_argument(
        "--space", type=Path, help="YAML search space: dotted config key -> distribution (docs/sweeps.md)"
    )
    parser.add_argument("--n_trials", type=int, help="trials to sample from --space, across all workers")
    parser.add_argument(
        "--objective",
        default="val/loss",
        help="a logged scalar's last value (default val/loss); reach:TAG>=VALUE, the first step it gets there; "
        "or crossing:SCORE:HEAD:THRESHOLD, the first snapshot step a head's score does",
    )
    parser.add_argument(
        "--direction", choices=("minimize", "maximize"), default="minimize", help="of the objective (default minimize)"
    )
    parser.add_argument(
        "--prune", action="store_true", help="stop trials whose val/loss Optuna's median pruner finds hopeless"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="trials run in parallel by this worker (default 1); each child gets its share of the cores",
    )
    parser.add_argument(
        "--storage", help="Optuna storage: an RDB URL, or journal:PATH (default sqlite:///DIRECTORY/optuna.db)"
    )
    parser.add_argument("--study_name", help="the study's name in the storage (default: the sweep directory's name)")
    parser.add_argument("--sampler_seed", type=int, default=0, help="seed of the TPE sampler (default 0)")
    return parser.parse_known_args(argv)


def parse_seeds(text: str) -> tuple[int, ...]:
    """`0-7`, `0,3,5` or a mix (`0-3,8`) as distinct seeds in the order given."""
    seeds: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise ConfigError(f"--seeds {text!r}: {part!r} is not a seed or a range; write e.g. 0-7 or 0,3,5")
        first = int(match.group(1))
        seeds += range(first, int(match.group(2) or first) + 1)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r} names a seed twice; give each seed once")
    return tuple(seeds)


def param_name(key: str) -> str:
    """The name Optuna and the report show: the config key without `init_args.`."""
    return key.replace(".init_args.", ".")


def number_or_text(value: Any) -> Any:
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


def check_distribution(key: str, spec: Any, path: Path) -> dict[str, Any]:
    where = f"space {path}: {key}"
    if not isinstance(spec, dict) or spec.get("type") not in ("float", "int", "categorical"):
        raise ConfigError(
            f"{where} must be a mapping with type float, int or categorical, "
            "e.g. {type: float, low: 1e-4, high: 1e-2, log: true}"
        )
    if spec["type"] == "categorical":
        choices = spec.get("choices")
        if (
            set(spec) != {"type", "choices"}
            or not isinstance(choices, list)
            or not choices
            or not all(isinstance(c, SCALAR_TYPES) for c in choices)
        ):
            raise ConfigError(
                f"{where} needs only choices: a non-empty list of numbers, strings, booleans or null, "
                "e.g. {type: categorical, choices: [32, 64]}"
            )
        return spec
    kind = float if spec["type"] == "float" else int
    if kind is float:  # YAML 1.1 reads 1e-4 (no dot) as a string
        spec = {key: number_or_text(value) if key in ("low", "high", "step") else value for key, value in spec.items()}
    extra = set(spec) - {"type", "low", "high", "log", "step"}
    bounds = [spec.get("low"), spec.get("high")]
    if extra or not all(
        isinstance(b, (int, float)) and not isinstance(b, bool) and (kind is float or isinstance(b, int))
        for b in bounds
    ):
        raise ConfigError(
            f"{where} needs {spec['type']} low and high (and optionally log, step)"
            + (f", not {sorted(extra)}" if extra else "")
        )
    if not bounds[0] < bounds[1] or (spec.get("log") and bounds[0] <= 0):
        raise ConfigError(f"{where} has low={bounds[0]}, high={bounds[1]}; need low < high, and low > 0 with log: true")
    return spec


def load_space(path: Path) -> dict[str, dict[str, Any]]:
    """The search space: dotted config keys (as `fit` takes them, without `--`) -> distributions."""
    if not path.is_file():
        raise ConfigError(f"--space {path} does not exist; pass a YAML file mapping config keys to distributions")
    try:
        space = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(
            f"--space {path} is not valid YAML ({getattr(error, 'problem', None) or error}); fix its syntax"
        ) from None
    if not isinstance(space, dict) or not space:
        raise ConfigError(
            f"--space {path} must map config keys to distributions, "
            "e.g. model.init_args.lr: {type: float, low: 1e-4, high: 1e-2, log: true}"
        )
    names: dict[str, str] = {}
    for key in space:
        if not FIT_OPTION.fullmatch(f"--{key}=x"):
            raise ConfigError(
                f"space {path}: {key!r} is not a config key; "
                "use dotted keys such as model.init_args.lr or data.init_args.batch_size"
            )
        if param_name(key) in names:
            raise ConfigError(f"space {path}: {key} and {names[param_name(key)]} name the same value; keep one")
        names[param_name(key)] = key
    return {key: check_distribution(key, spec, path) for key, spec in space.items()}


def default_storage(directory: Path) -> str:
    return f"sqlite:///{(directory / 'optuna.db').resolve()}"


def build_sweep(argv: list[str]) -> Sweep:
    """Every check that needs nothing but the command, so a bad command writes nothing."""
    args, rest = parse_args(argv)
    overrides = tuple(rest)
    for option in overrides:
        if not FIT_OPTION.fullmatch(option):
            raise ConfigError(
                f"sweep: {option!r} is not a sweep option nor a fit option written --key=value "
                "(e.g. --trainer.max_steps=500)"
            )
    if not Path(args.config).is_file():
        raise ConfigError(
            f"--config {args.config} does not exist; pass a config such as configs/bos_ints_attn_only.yaml"
        )
    if args.directory.exists() and not args.directory.is_dir():
        raise ConfigError(f"sweep directory {args.directory} is a file; pass a directory")
    if args.jobs < 1:
        raise ConfigError(f"--jobs={args.jobs} must be >= 1")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    space = load_space(args.space) if args.space is not None else None
    if space is not None and (args.n_trials is None or args.n_trials < 1):
        raise ConfigError("--space needs --n_trials N >= 1 (trials across all workers)")
    if seeds is not None and args.n_trials is not None:
        raise ConfigError("--n_trials is for --space; --seeds runs one trial per seed")
    if seeds is not None and any(o.startswith(("--seed_everything", "--data.init_args.seed=")) for o in overrides):
        raise ConfigError("--seeds sets seed_everything and data.init_args.seed; drop those overrides")
    if args.objective.startswith("reach") and not REACH.fullmatch(args.objective):
        raise ConfigError(
            f"--objective {args.objective}: write reach:TAG>=VALUE or reach:TAG<=VALUE, e.g. reach:val/acc>=0.989"
        )
    if args.objective.startswith("crossing") and not CROSSING.fullmatch(args.objective):
        raise ConfigError(
            f"--objective {args.objective}: write crossing:SCORE:HEAD:THRESHOLD, "
            "e.g. crossing:prev_token_score:L1H0:0.5"
        )
    if args.storage is not None and not (args.storage.startswith("journal:") or "://" in args.storage):
        raise ConfigError(
            f"--storage {args.storage}: give an RDB URL (sqlite:///PATH, postgresql://...) or journal:PATH"
        )
    return Sweep(
        directory=args.directory,
        config=args.config,
        overrides=overrides,
        seeds=seeds,
        space=space,
        n_trials=len(seeds) if seeds is not None else args.n_trials,
        objective=args.objective,
        direction=args.direction,
        storage=args.storage or default_storage(args.directory),
        study_name=args.study_name or args.directory.resolve().name,
        jobs=args.jobs,
        prune=args.prune,
        sampler_seed=args.sampler_seed,
    )


def open_storage(url: str):
    """An Optuna storage for an RDB URL or `journal:PATH`; SQLite waits for a busy file instead of failing."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def storage_exists(url: str) -> bool:
    """False only for a local SQLite or journal file not yet created (a server's storage always counts)."""
    if url.startswith("journal:"):
        return Path(url.removeprefix("journal:")).exists()
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///")).exists()
    return True


def load_study(sweep: Sweep, sampler_seed: int | None = None):
    import optuna

    sampler = optuna.samplers.TPESampler(seed=sampler_seed)
    return optuna.create_study(
        storage=open_storage(sweep.storage),
        study_name=sweep.study_name,
        sampler=sampler,
        direction=sweep.direction,
        load_if_exists=True,
    )


def check_same_command(sweep: Sweep, recorded: dict[str, Any]) -> None:
    mine = sweep.definition()
    for key, value in mine.items():
        if recorded.get(key) != value:
            raise ConfigError(
                f"study {sweep.study_name!r} was started with {key}={json.dumps(recorded.get(key))}, "
                f"not {json.dumps(value)}; "
                "run the same command to resume it, or use another sweep directory or --study_name"
            )


def existing_definition(sweep: Sweep) -> dict[str, Any] | None:
    """The definition recorded in the storage by the command that started this study, if any."""
    import optuna

    if not storage_exists(sweep.storage):
        return None
    try:
        study = optuna.load_study(study_name=sweep.study_name, storage=open_storage(sweep.storage))
    except KeyError:
        return None
    return study.user_attrs.get("lit_interp_sweep")


def start(sweep: Sweep) -> None:
    """Create (or join) the study: record the command, enqueue one trial per seed, write sweep.json."""
    from filelock import FileLock

    sweep.directory.mkdir(parents=True, exist_ok=True)
    with FileLock(sweep.directory / "sweep.lock"):
        study = load_study(sweep)
        recorded = study.user_attrs.get("lit_interp_sweep")
        if recorded is not None:
            return check_same_command(sweep, recorded)
        if sweep.seeds is not None:
            for seed in sweep.seeds:
                study.enqueue_trial({"seed": seed})
        study.set_user_attr("lit_interp_sweep", sweep.definition())
        info = {"study_name": sweep.study_name, "storage": sweep.storage, **sweep.definition()}
        (sweep.directory / "sweep.json").write_text(json.dumps(info, indent=1))


def trial_dir(sweep: Sweep, number: int) -> Path:
    return sweep.directory / f"trial_{number:04d}"


def run_dir(trial_directory: Path) -> Path:
    return trial_directory / "lightning_logs" / "version_0"


def trial_handle(study, number: int):
    """A live `optuna.trial.Trial` for a RUNNING trial, also one that another (dead) worker asked for.

    Optuna's public API hands out Trial objects only from `ask()`; taking over a trial needs its storage id.
    """
    import optuna

    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    return optuna.trial.Trial(study, frozen._trial_id)


def suggest(trial, sweep: Sweep) -> dict[str, Any]:
    """The trial's values, keyed by config key; a value already given (resume, enqueued seed) is kept."""
    if sweep.seeds is not None:
        seed = trial.suggest_categorical("seed", list(sweep.seeds))
        return {"seed_everything": seed, "data.init_args.seed": seed}
    values = {}
    for key, spec in (sweep.space or {}).items():
        name = param_name(key)
        if spec["type"] == "categorical":
            values[key] = trial.suggest_categorical(name, spec["choices"])
        elif spec["type"] == "float":
            values[key] = trial.suggest_float(
                name, spec["low"], spec["high"], log=spec.get("log", False), step=spec.get("step")
            )
        else:
            values[key] = trial.suggest_int(
                name, spec["low"], spec["high"], log=spec.get("log", False), step=spec.get("step", 1)
            )
    return values


@dataclass
class Claim:
    """A trial this worker owns until it is told: its number, values, and the held lock of its directory."""

    study: Any
    number: int
    values: dict[str, Any]
    lock: Any


def try_lock(path: Path):
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def claim(sweep: Sweep) -> Claim | None:
    """The next trial to run: a RUNNING trial whose worker died, an enqueued one, or a newly sampled one.

    The sweep lock makes the count and the ask one step across workers, so no more than n_trials are made;
    a trial's directory lock is held by the worker running it, and released by the system if it dies.
    """
    import optuna
    from filelock import FileLock

    State = optuna.trial.TrialState
    with FileLock(sweep.directory / "sweep.lock"):
        trials = load_study(sweep).get_trials(deepcopy=False)
        for frozen in trials:
            if frozen.state == State.RUNNING and (lock := try_lock(trial_dir(sweep, frozen.number) / "trial.lock")):
                study = load_study(sweep, sweep.sampler_seed + frozen.number)
                return Claim(study, frozen.number, suggest(trial_handle(study, frozen.number), sweep), lock)
        if not any(t.state == State.WAITING for t in trials) and len(trials) >= sweep.n_trials:
            return None
        # Seeded per trial number, so trials sample the same values whichever worker asks.
        study = load_study(sweep, sweep.sampler_seed + len(trials))
        trial = study.ask()
        lock = try_lock(trial_dir(sweep, trial.number) / "trial.lock")
        return Claim(study, trial.number, suggest(trial, sweep), lock)


def format_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)  # true/false/null and numbers as YAML reads them


def fit_command(sweep: Sweep, trial_directory: Path, number: int, values: dict[str, Any], resume: bool) -> list[str]:
    command = [sys.executable, "-m", "lit_interp", "fit", "--config", sweep.config, *sweep.overrides]
    command += [f"--{key}={format_value(value)}" for key, value in values.items()]
    command += [f"{RUN_ROOT_FLAG}={trial_directory}", "--trainer.enable_progress_bar=false"]
    if sweep.prune:
        pruning = {
            "class_path": "lit_interp.sweep_pruning.OptunaPruning",
            "init_args": {"storage": sweep.storage, "study_name": sweep.study_name, "trial_number": number},
        }
        command.append(f"--trainer.callbacks+={json.dumps(pruning)}")
    return command + (["--ckpt_path", "last"] if resume else [])


def child_environment(jobs: int) -> dict[str, str]:
    """Each of `jobs` children gets its share of the cores, unless the user set the thread counts."""
    environment = dict(os.environ)
    if jobs > 1:
        threads = str(max(1, len(os.sched_getaffinity(0)) // jobs))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            environment.setdefault(name, threads)
    return environment


def die_with_parent() -> None:
    """Runs in the child before exec: on Linux the kernel kills it when its worker dies, so no orphan keeps
    training in a directory that the next worker takes over."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def last_line(path: Path, offset: int) -> str:
    with path.open("rb") as file:
        file.seek(offset)
        lines = [line.strip() for line in file.read().decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no error message"


def describe(values: dict[str, Any]) -> str:
    shown = {
        ("seed" if key == "seed_everything" else param_name(key)): value
        for key, value in values.items()
        if key != "data.init_args.seed"
    }
    return ", ".join(f"{key}={value}" for key, value in shown.items())


@dataclass
class Running:
    """A trial's child fit in progress."""

    claimed: Claim
    child: subprocess.Popen
    stderr: Path
    stderr_offset: int
    started: float


class Worker:
    """Claims trials and runs each as a child fit, `jobs` at a time, until the study has no trial left to run.

    One thread polls the children: no threads, so each child can safely be tied to this process's life.
    """

    def __init__(self, sweep: Sweep):
        self.sweep = sweep
        self.running: dict[int, Running] = {}

    def run(self) -> None:
        claiming = True
        try:
            while True:
                while claiming and len(self.running) < self.sweep.jobs:
                    claimed = claim(self.sweep)
                    if claimed is None:
                        claiming = False
                    else:
                        self.running[claimed.number] = self.launch(claimed)
                if not self.running:
                    return
                time.sleep(0.1)
                for number, trial in list(self.running.items()):
                    if trial.child.poll() is not None:
                        del self.running[number]
                        try:
                            self.finish(trial)
                        finally:
                            trial.claimed.lock.release()
        except KeyboardInterrupt:
            for trial in self.running.values():  # the trials stay RUNNING: the next run of the command continues them
                trial.child.terminate()
                trial.child.wait()
                trial.claimed.lock.release()
            raise

    def launch(self, claimed: Claim) -> Running:
        directory = trial_dir(self.sweep, claimed.number)
        resume = (run_dir(directory) / "checkpoints" / "last.ckpt").is_file()
        if not resume and (directory / "lightning_logs").exists():
            shutil.rmtree(directory / "lightning_logs")  # cut off before its first checkpoint: start it again
        command = fit_command(self.sweep, directory, claimed.number, claimed.values, resume)
        (directory / "command.txt").write_text(shlex.join(command) + "\n")
        stderr_path = directory / "stderr.log"
        offset = stderr_path.stat().st_size if stderr_path.exists() else 0
        print(f"trial {claimed.number} {'resumed' if resume else 'started'}: {describe(claimed.values)}", flush=True)
        with (directory / "stdout.log").open("ab") as stdout, stderr_path.open("ab") as stderr:
            child = subprocess.Popen(
                command,
                stdout=stdout,
                stderr=stderr,
                env=child_environment(self.sweep.jobs),
                preexec_fn=die_with_parent,  # noqa: PLW1509 (safe: the worker runs no threads)
            )
        return Running(claimed, child, stderr_path, offset, time.monotonic())

    def finish(self, trial: Running) -> None:
        """Tell the study how the trial ended: FAIL with the error's last line, PRUNED, or the objective's value."""
        import optuna

        number, study = trial.claimed.number, trial.claimed.study
        elapsed = time.monotonic() - trial.started
        handle = trial_handle(study, number)
        run = run_dir(trial_dir(self.sweep, number))
        handle.set_user_attr("run_dir", str(run.relative_to(self.sweep.directory)))
        if trial.child.returncode != 0:
            problem = last_line(trial.stderr, trial.stderr_offset)
        elif (pruned_at := handle.user_attrs.get("pruned_at_step")) is not None:
            study.tell(number, state=optuna.trial.TrialState.PRUNED)
            print(f"trial {number} pruned at step {pruned_at}", flush=True)
            return
        else:
            value, problem = objective_value(self.sweep.objective, run)
        if problem:
            handle.set_user_attr("error", problem)
            study.tell(number, state=optuna.trial.TrialState.FAIL)
            print(f"trial {number} failed after {elapsed:.1f} s: {problem}", flush=True)
            return
        study.tell(number, value)
        print(f"trial {number} done in {elapsed:.1f} s: {self.sweep.objective} = {value:.6g}", flush=True)


def objective_value(objective: str, run: Path) -> tuple[float, str | None]:
    """(value, None), or (nan, why there is none): a scalar's last logged value, the step at which a scalar
    first reaches a value, or the snapshot step at which a head's score first crosses a threshold (inf: never)."""
    from lit_interp import runlogs
    from lit_interp.report import runs

    if match := CROSSING.fullmatch(objective):
        score, head, threshold = match.group(1), match.group(2), float(match.group(3))
        summaries = runs.read_snapshots(run)
        if not summaries:
            return NAN, f"run {run} wrote no analysis snapshots; keep the AnalysisSnapshots callback for {objective}"
        step = runs.crossing_step(summaries, head, score, threshold)
        return (INF if step is None else float(step)), None
    reach = REACH.fullmatch(objective)
    tag = reach.group(1) if reach else objective
    steps, values = runlogs.read_scalars(run, skip_prefixes=()).get(tag, ([], []))
    if not values:
        return NAN, f"run {run} never logged {tag}; pick a logged metric such as val/loss"
    if reach is None:
        return values[-1], None
    target, above = float(reach.group(3)), reach.group(2) == ">="
    reached = (step for step, value in zip(steps, values) if (value >= target if above else value <= target))
    return float(next(reached, INF)), None


def summarise(sweep: Sweep) -> str:
    import optuna

    trials = load_study(sweep).get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in optuna.trial.TrialState}
    line = f"{len(trials)} trials: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = (min if sweep.direction == "minimize" else max)(complete, key=lambda t: t.value)
        params = ", ".join(f"{name}={value}" for name, value in best.params.items())
        line += f"; best trial {best.number}: {sweep.objective} = {best.value:.6g} ({params})"
    return line


def main(argv: list[str]) -> None:
    """Entry point from `lit_interp.cli.main`; a user's mistake exits 2 with one line, nothing written."""
    import optuna

    try:
        sweep = build_sweep(argv)
        recorded = existing_definition(sweep)
        if recorded is not None:
            check_same_command(sweep, recorded)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        start(sweep)
    except ConfigError as error:
        print(f"lit_interp: error: {error}", file=sys.stderr)
        sys.exit(2)
    try:
        Worker(sweep).run()
    except KeyboardInterrupt:
        print("sweep interrupted: run the same command again to continue it", file=sys.stderr)
        sys.exit(130)
    print(summarise(sweep))
    print(f"tensorboard --logdir {sweep.directory}; report: python -m lit_interp analyze --runs {sweep.directory}")
