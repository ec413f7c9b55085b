"""Optuna storages by URL (an RDB URL or `journal:PATH`): opened for a sweep's workers, or read-only for reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lit_interp.errors import ConfigError

JOURNAL = "journal:"
SQLITE = "sqlite:///"


def open_storage(url: str):
    """An Optuna storage for an RDB URL or `journal:PATH`, created if absent; SQLite waits for a busy file."""
    import optuna

    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix(JOURNAL)))
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def local_file(url: str) -> Path | None:
    """The file of a journal or SQLite storage (None for a server's)."""
    if url.startswith(JOURNAL):
        return Path(url.removeprefix(JOURNAL))
    if url.startswith(SQLITE):
        return Path(url.removeprefix(SQLITE))
    return None


def storage_exists(url: str) -> bool:
    """False only for a local SQLite or journal file not yet created (a server's storage always counts)."""
    path = local_file(url)
    return path is None or path.exists()


def load_existing_study(url: str, study_name: str, what: str):
    """The study `study_name` in an existing storage, for reading; never creates a file or a study.

    A local storage file that does not exist, or a study that is not in it, is a one-line ConfigError.
    """
    import optuna

    path = local_file(url)
    if path is not None and not path.is_file():
        raise ConfigError(f"{what}: its study's storage {path} does not exist; copy it with the sweep directory")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url.startswith(SQLITE):  # read-only: a file that is not yet an Optuna database must not become one
        url = f"sqlite:///file:{path.resolve()}?mode=ro&uri=true"
    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(url))
    except (KeyError, ValueError, OSError) as error:
        raise ConfigError(
            f"{what}: cannot open its study {study_name} in {url} ({error}); is the storage reachable?"
        ) from None
    except Exception as error:  # sqlalchemy's errors: an unreachable server, a file that is not a database
        raise ConfigError(
            f"{what}: cannot open its study {study_name} in {url} ({type(error).__name__}); is the storage reachable?"
        ) from None


def trial_handle(study: Any, number: int):
    """A live `optuna.trial.Trial` for a RUNNING trial, also one that another (dead) worker asked for.

    Optuna's public API hands out Trial objects only from `ask()`; taking over a trial needs its storage id.
    """
    import optuna

    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    return optuna.trial.Trial(study, frozen._trial_id)
