"""What a sweep command asks for (`Sweep`), checked before anything is written: seeds, the space, the objective."""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from lit_interp.commands.arguments import ArgumentParser
from lit_interp.commands.sweep.objective import CROSSING, REACH
from lit_interp.errors import ConfigError
from lit_interp.optuna_storage import JOURNAL, check_url

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
# A fit config key as a sweep passes it on: dotted names only (a key never holds `=`, a space or a second option).
CONFIG_KEY = (
    r"(?:(?:model|data|trainer|checkpoint|optimizer|lr_scheduler)(?:\.[A-Za-z_][A-Za-z0-9_]*)+|seed_everything)"
)
FIT_OPTION = re.compile(rf"--(?P<key>{CONFIG_KEY})\+?=.*", re.DOTALL)  # the value may be anything, on many lines
SPACE_KEY = re.compile(CONFIG_KEY)
# The sweep decides where each trial's run and checkpoints go: its trial directory.
PLACED_BY_SWEEP = ("trainer.default_root_dir", "checkpoint.dirpath")
SCALAR_TYPES = (bool, int, float, str, type(None))
MAX_SEED = 2**32 - 1  # seed_everything's and numpy's range
MAX_TRIALS = 100_000  # seeds or trials in one sweep: more would only fill the storage
MAX_HEARTBEAT_SECONDS = 86_400


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
    heartbeat: int  # seconds between a running trial's heartbeats (RDB storages)
    grace_period: int  # seconds without one after which another worker takes the trial over

    def definition(self) -> dict[str, Any]:
        keys = ("config", "overrides", "seeds", "space", "objective", "direction", "prune", "heartbeat", "grace_period")
        return json.loads(json.dumps({key: value for key, value in asdict(self).items() if key in keys}))


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = ArgumentParser("sweep", DESCRIPTION)
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
    parser.add_argument(
        "--heartbeat", type=int, default=10, help="seconds between a running trial's heartbeats (default 10)"
    )
    parser.add_argument(
        "--grace_period",
        type=int,
        default=60,
        help="seconds without a heartbeat after which another worker takes a trial over (default 60)",
    )
    return parser.parse_known_args(argv)


def seed_range(text: str, part: str) -> tuple[int, int]:
    """`3` or `0-7` as (first, last), each a seed in 0..MAX_SEED, read without making a number of any size."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
    if not match:
        raise ConfigError(f"--seeds {text!r}: {part!r} is not a seed or a range; write e.g. 0-7 or 0,3,5")
    for digits in match.groups(default=match.group(1)):
        if len(digits.lstrip("0")) > len(str(MAX_SEED)) or int(digits) > MAX_SEED:
            raise ConfigError(f"--seeds {text!r}: seed {digits} is out of range; seeds are 0 to {MAX_SEED}")
    first, last = int(match.group(1)), int(match.group(2) or match.group(1))
    if last < first:
        raise ConfigError(f"--seeds {text!r}: {part!r} is not a seed or a range; write e.g. 0-7 or 0,3,5")
    return first, last


def parse_seeds(text: str) -> tuple[int, ...]:
    """`0-7`, `0,3,5` or a mix (`0-3,8`) as distinct seeds in the order given; counted before they are made."""
    ranges = [seed_range(text, part) for part in text.split(",")]
    count = sum(last - first + 1 for first, last in ranges)
    if count > MAX_TRIALS:
        raise ConfigError(
            f"--seeds {text!r} names {count} seeds; a sweep runs at most {MAX_TRIALS}: split it into several sweeps"
        )
    ordered = sorted(ranges)
    if any(second[0] <= first[1] for first, second in zip(ordered, ordered[1:])):
        raise ConfigError(f"--seeds {text!r} names a seed twice; give each seed once")
    return tuple(seed for first, last in ranges for seed in range(first, last + 1))


def param_name(key: str) -> str:
    """The name Optuna and the report show: the config key without `init_args.`."""
    return key.replace(".init_args.", ".")


def number_or_text(value: Any) -> Any:
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


def is_number(value: Any, kind: type) -> bool:
    """A finite int, or (kind float) a finite int or float; never a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        return False
    return isinstance(value, int) or math.isfinite(value)


def check_categorical(where: str, spec: dict[str, Any]) -> dict[str, Any]:
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


def check_distribution(key: str, spec: Any, path: Path) -> dict[str, Any]:
    """A float, int or categorical distribution Optuna accepts as written, or a one-line ConfigError."""
    where = f"space {path}: {key}"
    if not isinstance(spec, dict) or spec.get("type") not in ("float", "int", "categorical"):
        raise ConfigError(
            f"{where} must be a mapping with type float, int or categorical, "
            "e.g. {type: float, low: 1e-4, high: 1e-2, log: true}"
        )
    if spec["type"] == "categorical":
        return check_categorical(where, spec)
    kind = float if spec["type"] == "float" else int
    if kind is float:  # YAML 1.1 reads 1e-4 (no dot) as a string
        spec = {key: number_or_text(value) if key in ("low", "high", "step") else value for key, value in spec.items()}
    extra = set(spec) - {"type", "low", "high", "log", "step"}
    low, high = spec.get("low"), spec.get("high")
    if extra or not (is_number(low, kind) and is_number(high, kind)):
        raise ConfigError(
            f"{where} needs finite {spec['type']} low and high (and optionally log, step)"
            + (f", not {sorted(extra)}" if extra else "")
        )
    if not isinstance(spec.get("log", False), bool):
        raise ConfigError(f"{where} has log={spec['log']!r}; write log: true or log: false")
    step = spec.get("step")
    if step is not None and spec.get("log"):
        raise ConfigError(f"{where} has both log: true and step; Optuna takes one of them")
    if step is not None and not (is_number(step, kind) and step > 0):
        raise ConfigError(f"{where} has step={step!r}; need a positive {'integer' if kind is int else 'number'}")
    if not low < high or (spec.get("log") and low <= 0):
        raise ConfigError(f"{where} has low={low}, high={high}; need low < high, and low > 0 with log: true")
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
        if not isinstance(key, str) or not SPACE_KEY.fullmatch(key):
            raise ConfigError(
                f"space {path}: {key!r} is not a config key; "
                "use dotted keys such as model.init_args.lr or data.init_args.batch_size"
            )
        if key in PLACED_BY_SWEEP:
            raise ConfigError(
                f"space {path}: {key} is set by the sweep (each trial's run and checkpoints go in "
                "SWEEP_DIR/trial_NNNN); leave it out"
            )
        if param_name(key) in names:
            raise ConfigError(f"space {path}: {key} and {names[param_name(key)]} name the same value; keep one")
        names[param_name(key)] = key
    return {key: check_distribution(key, spec, path) for key, spec in space.items()}


def default_storage(directory: Path) -> str:
    return f"sqlite:///{(directory / 'optuna.db').resolve()}"


def check_overrides(overrides: tuple[str, ...], seeds: bool) -> None:
    for option in overrides:
        match = FIT_OPTION.fullmatch(option)
        if not match:
            raise ConfigError(
                f"sweep: {option!r} is not a sweep option nor a fit option written --key=value "
                "(e.g. --trainer.max_steps=500)"
            )
        if match["key"] in PLACED_BY_SWEEP:
            raise ConfigError(
                f"sweep: --{match['key']} is set by the sweep (each trial's run and checkpoints go in "
                "SWEEP_DIR/trial_NNNN); leave it out"
            )
        if seeds and match["key"] in ("seed_everything", "data.init_args.seed"):
            raise ConfigError("--seeds sets seed_everything and data.init_args.seed; drop those overrides")


def check_objective(objective: str) -> None:
    value = None
    if objective.startswith("reach"):
        if not (match := REACH.fullmatch(objective)):
            raise ConfigError(
                f"--objective {objective}: write reach:TAG>=VALUE or reach:TAG<=VALUE, e.g. reach:val/acc>=0.989"
            )
        value = match["target"]
    if objective.startswith("crossing"):
        if not (match := CROSSING.fullmatch(objective)):
            raise ConfigError(
                f"--objective {objective}: write crossing:SCORE:HEAD:THRESHOLD, e.g. crossing:prev_token_score:L1H0:0.5"
            )
        value = match["threshold"]
    try:
        finite = value is None or math.isfinite(float(value))
    except ValueError:
        finite = False
    if not finite:
        raise ConfigError(f"--objective {objective}: {value} is not a finite number")


def check_numbers(args: argparse.Namespace) -> None:
    """The integer options: within what a sweep can run, so nothing later overflows or loops without end."""
    if args.jobs < 1:
        raise ConfigError(f"--jobs={args.jobs} must be >= 1")
    if args.space is not None and (args.n_trials is None or args.n_trials < 1):
        raise ConfigError("--space needs --n_trials N >= 1 (trials across all workers)")
    if args.n_trials is not None and args.n_trials > MAX_TRIALS:
        raise ConfigError(f"--n_trials={args.n_trials} must be at most {MAX_TRIALS}")
    if args.seeds is not None and args.n_trials is not None:
        raise ConfigError("--n_trials is for --space; --seeds runs one trial per seed")
    if not 0 <= args.sampler_seed <= MAX_SEED:
        raise ConfigError(f"--sampler_seed={args.sampler_seed} must be between 0 and {MAX_SEED}")
    if not 1 <= args.heartbeat <= MAX_HEARTBEAT_SECONDS:
        raise ConfigError(f"--heartbeat={args.heartbeat} must be between 1 and {MAX_HEARTBEAT_SECONDS} seconds")
    if not args.heartbeat < args.grace_period <= MAX_HEARTBEAT_SECONDS:
        raise ConfigError(
            f"--grace_period={args.grace_period} must be more than --heartbeat={args.heartbeat} and at most "
            f"{MAX_HEARTBEAT_SECONDS} seconds: a live worker beats at least once within it"
        )


def check_storage(storage: str | None) -> None:
    if storage is None:
        return
    if not (storage.startswith(JOURNAL) or "://" in storage):
        raise ConfigError(f"--storage {storage}: give an RDB URL (sqlite:///PATH, postgresql://...) or journal:PATH")
    check_url(storage)


def build_sweep(argv: list[str]) -> Sweep:
    """Every check that needs nothing but the command, so a bad command writes nothing."""
    args, rest = parse_args(argv)
    overrides = tuple(rest)
    check_overrides(overrides, seeds=args.seeds is not None)
    if not Path(args.config).is_file():
        raise ConfigError(
            f"--config {args.config} does not exist; pass a config such as configs/bos_ints_attn_only.yaml"
        )
    if args.directory.exists() and not args.directory.is_dir():
        raise ConfigError(f"sweep directory {args.directory} is a file; pass a directory")
    check_numbers(args)
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    space = load_space(args.space) if args.space is not None else None
    check_objective(args.objective)
    check_storage(args.storage)
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
        heartbeat=args.heartbeat,
        grace_period=args.grace_period,
    )
