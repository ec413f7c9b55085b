"""The sweep's Optuna study: created or joined, one trial per seed enqueued, trials claimed by workers.

Every step that reads the study and then changes it (recording the command, counting and asking, failing a stale
trial, taking one over) runs under the storage's lock, so workers on any number of machines take turns.
"""

from __future__ import annotations

import enum
import json
import socket
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lit_interp.commands.sweep.definition import Sweep, param_name
from lit_interp.errors import ConfigError
from lit_interp.optuna_storage import (
    Heartbeat,
    fail_stale_trials,
    frozen_trial,
    open_storage,
    read_only_url,
    record_heartbeat,
    server_lock,
    storage_exists,
    storage_lock,
    supports_heartbeat,
    trial_handle,
)
from lit_interp.sweep_dir import (
    DIRECTORY_ID,
    HOST,
    RETRY_OF,
    WORKER,
    home_number,
    ran_in,
    read_sweep_info,
    trial_dir,
    write_sweep_info,
)

SEED_SPACE = 2**32  # TPE's seed is numpy's: trial k samples with (sampler_seed + k) modulo this


def heartbeat_of(sweep: Sweep) -> Heartbeat | None:
    return Heartbeat(sweep.heartbeat, sweep.grace_period) if supports_heartbeat(sweep.storage) else None


def sweep_storage(sweep: Sweep):
    """The storage every study object of this worker shares (one connection pool), with the heartbeat on."""
    return open_storage(sweep.storage, heartbeat_of(sweep))


def sampler(sweep: Sweep, number: int):
    """TPE seeded by the trial's number, so a trial samples the same values whichever worker asks."""
    import optuna

    return optuna.samplers.TPESampler(seed=(sweep.sampler_seed + number) % SEED_SPACE)


def load_study(sweep: Sweep, storage: Any):
    import optuna

    return optuna.load_study(study_name=sweep.study_name, storage=storage)


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
    # Read-only, and on a server under the study's lock: Optuna stamps a half-created database's schema version
    # even when opened without creating tables, which would race another worker's creating them under the lock.
    try:
        with server_lock(sweep.storage, sweep.study_name):
            storage = open_storage(read_only_url(sweep.storage), read_only=True)
            study = optuna.load_study(study_name=sweep.study_name, storage=storage)
    except Exception:  # no study, no tables yet, or a server out of reach (start() says which)
        return None
    return study.user_attrs.get("lit_interp_sweep")


def check_directory(sweep: Sweep) -> None:
    """A sweep directory holds one study's trials: refuse one whose sweep.json names another study."""
    info = read_sweep_info(sweep.directory)
    if info is not None and info["study_name"] != sweep.study_name:
        raise ConfigError(
            f"sweep directory {sweep.directory} holds the trials of study {info['study_name']!r}, not "
            f"{sweep.study_name!r}; use another directory for another study"
        )


def start(sweep: Sweep) -> tuple[Any, str]:
    """Create (or join) the study: record the command and enqueue one trial per seed (once, whichever worker comes
    first), and give this directory its sweep.json; (the worker's storage, the directory's id)."""
    import optuna

    check_directory(sweep)
    sweep.directory.mkdir(parents=True, exist_ok=True)
    with storage_lock(sweep.storage, sweep.study_name, sweep.directory):
        storage = sweep_storage(sweep)  # inside the lock: two workers creating one SQLite file's tables would clash
        study = optuna.create_study(
            storage=storage, study_name=sweep.study_name, direction=sweep.direction, load_if_exists=True
        )
        recorded = study.user_attrs.get("lit_interp_sweep")
        if recorded is not None:
            check_same_command(sweep, recorded)
        else:
            for seed in sweep.seeds or ():
                study.enqueue_trial({"seed": seed})
            study.set_user_attr("lit_interp_sweep", sweep.definition())
    info = read_sweep_info(sweep.directory)
    if info is None:
        info = {"study_name": sweep.study_name, "storage": sweep.storage, DIRECTORY_ID: uuid.uuid4().hex}
        write_sweep_info(sweep.directory, info | sweep.definition())
    return storage, info.get(DIRECTORY_ID) or ""


def suggest(trial, sweep: Sweep) -> dict[str, Any]:
    """The trial's values, keyed by config key; a value already given (resume, enqueued seed) is kept."""
    if sweep.seeds is not None:
        seed = trial.suggest_int("seed", min(sweep.seeds), max(sweep.seeds))  # enqueued: one trial per seed
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


@dataclass(frozen=True)
class Identity:
    """Where this worker runs: its sweep directory's id and its host (recorded on every trial it claims)."""

    directory_id: str
    host: str

    @classmethod
    def here(cls, directory_id: str) -> Identity:
        return cls(directory_id, socket.gethostname())


@dataclass
class Claim:
    """A trial this worker owns until it is told: its study and live trial, the number of its directory (the trial it
    retries, or its own), its directory's lock (None: still held by a worker that lost the trial), whom it takes
    over from (None: a new trial), and its values."""

    study: Any
    trial: Any
    home: int
    lock: Any
    took_over_from: int | None = None
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def trial_id(self) -> int:
        return self.trial._trial_id  # the storage's id, where heartbeats are recorded


class Nothing(enum.Enum):
    """Why `claim` gave no trial: wait (trials of other workers still run and may need taking over), or done."""

    WAIT = "wait"
    DONE = "done"


def try_lock(path: Path):
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def is_mine(frozen, identity: Identity, heartbeat: bool) -> bool:
    """Whether this worker may judge the trial dead by its directory's lock: it ran in this sweep directory, and,
    where the storage has a heartbeat, on this host (across hosts a shared filesystem's locks may not be shared)."""
    if not ran_in(frozen, identity.directory_id):
        return False
    return not heartbeat or frozen.user_attrs.get(WORKER, {}).get(HOST) in (None, identity.host)


def record_claim(trial: Any, identity: Identity, storage: Any) -> None:
    """A heartbeat at once (a trial that never had one is never found stale) and who runs the trial where: both
    before the storage's lock is let go, so no other worker takes the trial for a dead one's."""
    record_heartbeat(storage, trial._trial_id)
    trial.set_user_attr(WORKER, {DIRECTORY_ID: identity.directory_id, HOST: identity.host})


def take_over_in_place(sweep: Sweep, study: Any, storage: Any, trials: list, identity: Identity) -> Claim | None:
    """A RUNNING trial of this directory (and host) whose lock no process holds: its worker died."""
    import optuna

    heartbeat = heartbeat_of(sweep) is not None
    for frozen in trials:
        if frozen.state != optuna.trial.TrialState.RUNNING or not is_mine(frozen, identity, heartbeat):
            continue
        home = home_number(frozen)
        if lock := try_lock(trial_dir(sweep.directory, home) / "trial.lock"):
            study.sampler = sampler(sweep, frozen.number)
            if frozen_trial(study, frozen.number).state != optuna.trial.TrialState.RUNNING:
                lock.release()  # told by its worker since `trials` was read, then unlocked: not dead, done
                continue
            trial = trial_handle(study, frozen.number)
            record_claim(trial, identity, storage)
            return Claim(study, trial, home, lock, took_over_from=frozen.number)
    return None


def logical_trials(trials: list) -> int:
    """Trials the study counts towards n_trials: every trial but the retries of stale ones."""
    return sum(RETRY_OF not in t.system_attrs for t in trials)


def ask(sweep: Sweep, study: Any, storage: Any, trials: list, identity: Identity) -> Claim:
    """A WAITING trial (an enqueued seed, a retry of a stale trial), else a new one."""
    study.sampler = sampler(sweep, len(trials))  # the new trial's number: the count, under the lock
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "heartbeat is supposed to be used with Study.optimize": we beat ourselves
        trial = study.ask()
    record_claim(trial, identity, storage)
    frozen = frozen_trial(study, trial.number)
    home = home_number(frozen)
    retried = frozen.system_attrs.get("retry_history") or [None]
    return Claim(study, trial, home, try_lock(trial_dir(sweep.directory, home) / "trial.lock"), retried[-1])


def reserve(sweep: Sweep, storage: Any, identity: Identity) -> Claim | Nothing:
    """The trial this worker runs next, made its own under the storage's lock (its values are drawn after)."""
    import optuna

    State = optuna.trial.TrialState
    with storage_lock(sweep.storage, sweep.study_name, sweep.directory):
        study = load_study(sweep, storage)
        trials = study.get_trials(deepcopy=False)
        if claimed := take_over_in_place(sweep, study, storage, trials, identity):
            return claimed
        if stale := fail_stale_trials(study, storage):
            for number in stale:
                late = f"no heartbeat from its worker for {sweep.grace_period} s"
                print(f"trial {number}: {late}; queued again", flush=True)
            trials = study.get_trials(deepcopy=False)
        if any(t.state == State.WAITING for t in trials) or logical_trials(trials) < sweep.n_trials:
            return ask(sweep, study, storage, trials, identity)
        heartbeat = heartbeat_of(sweep) is not None
        running = [t for t in trials if t.state == State.RUNNING and (heartbeat or ran_in(t, identity.directory_id))]
        return Nothing.WAIT if running else Nothing.DONE


def claim(sweep: Sweep, storage: Any, identity: Identity) -> Claim | Nothing:
    """The next trial to run: a RUNNING trial of this directory whose worker died (its lock is free), a retry of a
    trial whose worker stopped sending heartbeats, an enqueued one, or a newly sampled one; with its values."""
    claimed = reserve(sweep, storage, identity)
    if isinstance(claimed, Claim):
        claimed.values = suggest(claimed.trial, sweep)  # TPE's sampling needs no lock: the trial is this worker's
    return claimed


def summarise(sweep: Sweep, storage: Any) -> str:
    """How the study's trials ended (a trial and its retries counted once, by the last attempt) and the best one."""
    import optuna

    latest: dict[int, Any] = {}
    for trial in load_study(sweep, storage).get_trials(deepcopy=False):
        latest[home_number(trial)] = trial  # in number order: the last attempt wins
    trials = list(latest.values())
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in optuna.trial.TrialState}
    line = f"{len(trials)} trials: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = (min if sweep.direction == "minimize" else max)(complete, key=lambda t: t.value)
        params = ", ".join(f"{name}={value}" for name, value in best.params.items())
        line += f"; best trial {home_number(best)}: {sweep.objective} = {best.value:.6g} ({params})"
    return line
