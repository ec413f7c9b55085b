"""Optuna storages by URL (an RDB URL or `journal:PATH`): opened for a sweep's workers (with the heartbeat where the
storage has one, and a lock that serialises the workers' bookkeeping), or read-only for reports."""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from lit_interp.errors import ConfigError

JOURNAL = "journal:"
SQLITE = "sqlite:///"
# A trial whose worker stops sending heartbeats is failed and queued again, at most this many times.
MAX_TAKEOVERS = 3
LOCK_WAIT_SECONDS = 300  # a worker waiting longer than this for another's bookkeeping gives up with one line


@dataclass(frozen=True)
class Heartbeat:
    """Optuna's RDB heartbeat: each running trial's worker records one every `interval` seconds; a RUNNING trial
    without one for `grace_period` seconds (by the database server's clock) is its dead worker's."""

    interval: int
    grace_period: int


def engine_url(url: str) -> str:
    """`postgresql://` means psycopg (3) when psycopg2, SQLAlchemy's default driver for it, is not installed."""
    if (
        url.startswith("postgresql://")
        and not importlib.util.find_spec("psycopg2")
        and importlib.util.find_spec("psycopg")
    ):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def check_url(url: str) -> None:
    """A one-line ConfigError for a URL no storage can be made of, one holding a password, or a missing driver."""
    if url.startswith(JOURNAL):
        if not url.removeprefix(JOURNAL):
            raise ConfigError("--storage journal: needs a file, e.g. journal:/shared/sweep.journal")
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(engine_url(url))
        dialect = parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        raise ConfigError(
            f"--storage {url}: not a database URL; give sqlite:///PATH, postgresql://USER@HOST/DB or journal:PATH"
        ) from None
    if parsed.password:
        raise ConfigError(
            f"--storage {make_url(url).render_as_string(hide_password=True)}: keep the password out of the URL "
            "(it would be "
            "written to sweep.json and every trial's config); PostgreSQL reads it from PGPASSWORD or ~/.pgpass"
        )
    try:
        (getattr(dialect, "import_dbapi", None) or dialect.dbapi)()
    except ImportError as error:
        extra = " (pip install 'lit_interp[postgres]')" if parsed.get_backend_name() == "postgresql" else ""
        raise ConfigError(f"--storage {url}: its driver is not installed: {error}{extra}") from None


def stale_trial_callback():
    """Optuna's own retry of a heartbeat-stale trial (a WAITING copy with the same parameters, whose system
    attribute `failed_trial` names the original); named RetryHeartbeatStaleTrialCallback since Optuna 4.9."""
    import optuna

    retry = (
        getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning
        return StaleTrials(retry(max_retry=MAX_TAKEOVERS))


@dataclass
class StaleTrials:
    """The storage's stale-trial callback: Optuna's retry, and the numbers of the trials it was called for."""

    retry: Any
    failed: list[int] = field(default_factory=list)

    def __call__(self, study, trial) -> None:
        self.failed.append(trial.number)
        self.retry(study, trial)


def rdb_storage(url: str, heartbeat: Heartbeat | None = None, read_only: bool = False):
    import optuna

    kwargs: dict[str, Any] = {"engine_kwargs": {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None}
    if read_only:
        kwargs["skip_table_creation"] = True
    if heartbeat is not None:
        import inspect

        parameters = inspect.signature(optuna.storages.RDBStorage).parameters
        callback = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in parameters else None
        kwargs |= {"heartbeat_interval": heartbeat.interval, "grace_period": heartbeat.grace_period}
        kwargs[callback or "failed_trial_callback"] = stale_trial_callback()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the heartbeat's ExperimentalWarning
        return optuna.storages.RDBStorage(engine_url(url), **kwargs)


def open_storage(url: str, heartbeat: Heartbeat | None = None, read_only: bool = False):
    """An Optuna storage for an RDB URL or `journal:PATH` (created if absent, unless `read_only`); an RDB storage
    records heartbeats when `heartbeat` is given (a journal has none); SQLite waits for a busy file."""
    import optuna

    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix(JOURNAL)))
    import sqlalchemy.exc

    try:
        return rdb_storage(url, heartbeat, read_only)
    except ImportError as error:
        raise ConfigError(f"--storage {url}: its driver is not installed: {error}") from None
    except sqlalchemy.exc.OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        raise ConfigError(
            f"--storage {url}: cannot open it ({reason}); is the server running, the file writable?"
        ) from None


def supports_heartbeat(url: str) -> bool:
    """RDB storages (SQLite, PostgreSQL, MySQL) record heartbeats; Optuna's journal storage has none."""
    return not url.startswith(JOURNAL)


def record_heartbeat(storage: Any, trial_id: int) -> None:
    """One heartbeat of a running trial, for a storage opened with a `Heartbeat` (nothing for other storages)."""
    if getattr(storage, "get_heartbeat_interval", lambda: None)() is not None:
        storage.record_heartbeat(trial_id)


def fail_stale_trials(study: Any, storage: Any) -> list[int]:
    """Fail the RUNNING trials whose worker stopped sending heartbeats and queue a retry of each (Optuna's
    `fail_stale_trials`, for the study opened on `storage`); the numbers of the trials this call failed."""
    import optuna

    if getattr(storage, "get_heartbeat_interval", lambda: None)() is None:
        return []
    callback = getattr(storage, "get_heartbeat_stale_trial_callback", None) or storage.get_failed_trial_callback
    failed = callback().failed
    before = len(failed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning
        optuna.storages.fail_stale_trials(study)
    return failed[before:]


def local_file(url: str) -> Path | None:
    """The file of a journal or SQLite storage (None for a server's)."""
    if url.startswith(JOURNAL):
        return Path(url.removeprefix(JOURNAL))
    if url.startswith(SQLITE):
        return Path(url.removeprefix(SQLITE).split("?")[0])
    return None


def storage_exists(url: str) -> bool:
    """False only for a local SQLite or journal file not yet created (a server's storage always counts)."""
    path = local_file(url)
    return path is None or path.exists()


@cache
def lock_engine(url: str):
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    return sqlalchemy.create_engine(url, poolclass=NullPool)


@contextmanager
def postgres_lock(url: str, study_name: str) -> Iterator[None]:
    """A transaction-scoped advisory lock on the server: released when the transaction ends, or by the server when
    the connection drops or idles in the transaction for a minute (a machine lost while holding it)."""
    import sqlalchemy
    import sqlalchemy.exc

    key = int.from_bytes(hashlib.sha256(f"lit_interp sweep {study_name}".encode()).digest()[:8], "big", signed=True)
    connection = lock_engine(engine_url(url)).connect()
    try:
        transaction = connection.begin()
        connection.execute(sqlalchemy.text(f"SET LOCAL lock_timeout = '{LOCK_WAIT_SECONDS}s'"))
        connection.execute(sqlalchemy.text("SET LOCAL idle_in_transaction_session_timeout = '60s'"))
        try:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        except sqlalchemy.exc.OperationalError:
            raise ConfigError(
                f"study {study_name}: another worker held its lock in {url} for over {LOCK_WAIT_SECONDS} s; "
                "is one hung? run the command again"
            ) from None
        yield
        try:
            transaction.commit()
        except sqlalchemy.exc.DBAPIError:
            pass  # the server ended the session (held over a minute): the lock is released all the same
    finally:
        connection.close()


def read_only_url(url: str) -> str:
    """`url`, opened read-only where the database can be: a SQLite file that is not yet an Optuna database must not
    become one (Optuna writes its schema version even when told not to create tables)."""
    path = local_file(url)
    if url.startswith(SQLITE) and path is not None:
        return f"sqlite:///file:{path.resolve()}?mode=ro&uri=true"
    return url


@contextmanager
def server_lock(url: str, study_name: str) -> Iterator[None]:
    """The study's lock on a PostgreSQL server (nothing elsewhere): for reading a storage another worker may be
    creating, without writing a lock file."""
    if url.startswith("postgresql"):
        with postgres_lock(url, study_name):
            yield
    else:
        yield


@contextmanager
def storage_lock(url: str, study_name: str, fallback: Path) -> Iterator[None]:
    """Held while a worker counts, asks, fails stale trials or takes one over, so every machine reaching the storage
    takes turns: a file lock beside a SQLite or journal file, an advisory lock on a PostgreSQL server, and for
    other databases the sweep directory's `sweep.lock` (then every worker must share one sweep directory)."""
    from filelock import FileLock, Timeout

    path = local_file(url)
    if path is None and url.startswith("postgresql"):
        with postgres_lock(url, study_name):
            yield
        return
    lock = FileLock(f"{path}.sweep.lock" if path is not None else Path(fallback) / "sweep.lock")
    try:
        lock.acquire(timeout=LOCK_WAIT_SECONDS)
    except Timeout:
        raise ConfigError(
            f"study {study_name}: another worker held {lock.lock_file} for over {LOCK_WAIT_SECONDS} s; "
            "is one hung? run the command again"
        ) from None
    try:
        yield
    finally:
        lock.release()


def load_existing_study(url: str, study_name: str, what: str):
    """The study `study_name` in an existing storage, for reading; never creates a file, a table or a study.

    A local storage file that does not exist, or a study that is not in it, is a one-line ConfigError.
    """
    import optuna

    path = local_file(url)
    if path is not None and not path.is_file():
        raise ConfigError(f"{what}: its study's storage {path} does not exist; copy it with the sweep directory")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(read_only_url(url), read_only=True))
    except ConfigError as error:
        raise ConfigError(f"{what}: {error}") from None
    except optuna.exceptions.StorageInternalError:
        raise ConfigError(
            f"{what}: {url} holds no Optuna study (its tables are missing); is that the storage?"
        ) from None
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

    return optuna.trial.Trial(study, frozen_trial(study, number)._trial_id)


def frozen_trial(study: Any, number: int):
    """A trial as the storage has it now (another worker may have failed it): state, attributes, parameters."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)
