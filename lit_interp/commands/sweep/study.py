"""The sweep's Optuna study: created or joined, one trial per seed enqueued, trials claimed by workers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_interp.commands.sweep.definition import Sweep, param_name
from lit_interp.errors import ConfigError
from lit_interp.optuna_storage import open_storage, storage_exists, trial_handle
from lit_interp.sweep_dir import SWEEP_JSON, trial_dir


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
        (sweep.directory / SWEEP_JSON).write_text(json.dumps(info, indent=1))


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
            if frozen.state == State.RUNNING and (
                lock := try_lock(trial_dir(sweep.directory, frozen.number) / "trial.lock")
            ):
                study = load_study(sweep, sweep.sampler_seed + frozen.number)
                return Claim(study, frozen.number, suggest(trial_handle(study, frozen.number), sweep), lock)
        if not any(t.state == State.WAITING for t in trials) and len(trials) >= sweep.n_trials:
            return None
        # Seeded per trial number, so trials sample the same values whichever worker asks.
        study = load_study(sweep, sweep.sampler_seed + len(trials))
        trial = study.ask()
        lock = try_lock(trial_dir(sweep.directory, trial.number) / "trial.lock")
        return Claim(study, trial.number, suggest(trial, sweep), lock)


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
