"""The Optuna storages the sweep tests run on: SQLite, Optuna's journal file, and a real PostgreSQL server.

PostgreSQL: the server at $LIT_INTERP_TEST_POSTGRES (a SQLAlchemy URL; `.ci/run` starts one with
`.ci/postgres.sh`), else a throwaway cluster this session starts with the same script; each test gets a fresh
database on it. Where neither works the PostgreSQL cases skip with the reason. `fingerprint` tells whether a
command wrote anything.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_SCRIPT = ROOT / ".ci" / "postgres.sh"
SERVER_ENV = "LIT_INTERP_TEST_POSTGRES"
STORAGES = ("sqlite", "journal", "postgresql")


def start_own_server() -> tuple[str | None, str | None, Path | None]:
    """(URL, None, its directory) of a cluster started here, or (None, why not, None)."""
    directory = Path(tempfile.mkdtemp(prefix="litpg."))
    directory.rmdir()  # the script makes it, owned by the server's user
    try:
        started = subprocess.run(
            ["bash", str(POSTGRES_SCRIPT), "start", str(directory)], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"could not start a PostgreSQL server ({error})", None
    if started.returncode != 0:
        lines = (started.stderr.strip() or "no output").splitlines()
        return None, f"could not start a PostgreSQL server: {lines[-1]}", directory
    return started.stdout.strip().splitlines()[-1], None, directory


@pytest.fixture(scope="session")
def postgres_server():
    """The URL of a PostgreSQL server's `lit_interp` database (skips with a one-line reason without one)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL tests need psycopg: pip install -e '.[postgres]'")
    if url := os.environ.get(SERVER_ENV):
        yield url
        return
    url, problem, directory = start_own_server()
    try:
        if url is None:
            pytest.skip(problem)
        yield url
    finally:
        if directory is not None:
            subprocess.run(["bash", str(POSTGRES_SCRIPT), "stop", str(directory)], capture_output=True, timeout=120)


def fresh_database(server_url: str) -> str:
    """A new, empty database on the server (a test's studies never meet another test's)."""
    import sqlalchemy
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def storage_url(kind: str, directory: Path, request) -> str:
    """A storage of `kind` for one test: a file under `directory`, or a fresh PostgreSQL database."""
    if kind == "sqlite":
        return f"sqlite:///{(directory / 'study.db').resolve()}"
    if kind == "journal":
        return f"journal:{(directory / 'study.journal').resolve()}"
    return fresh_database(request.getfixturevalue("postgres_server"))


@pytest.fixture(params=STORAGES)
def any_storage(request, tmp_path) -> str:
    """The URL of a new, empty storage of each kind in turn."""
    return storage_url(request.param, tmp_path, request)


@pytest.fixture(params=("sqlite", "postgresql"))
def heartbeat_storage(request, tmp_path) -> str:
    """The storages with Optuna's heartbeat (RDB): SQLite and PostgreSQL."""
    return storage_url(request.param, tmp_path, request)


@pytest.fixture
def postgres_url(request) -> str:
    return fresh_database(request.getfixturevalue("postgres_server"))


def fingerprint(root: Path) -> dict[str, str]:
    """Every path under `root` with its content's hash (directories and links too): what a command changed."""

    def state(path: Path) -> str:
        if path.is_symlink():
            return f"link {os.readlink(path)}"
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "directory"

    return {str(path.relative_to(root)): state(path) for path in sorted(root.rglob("*"))}
