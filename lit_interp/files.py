"""Files lit_interp writes and reads: atomic writes (fsynced and renamed), strict JSON, bounded reads."""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lit_interp.errors import ConfigError


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """`write(temporary path)` beside `path`, fsync it, rename it over `path`, fsync the directory.

    A reader never sees a partial file, and a crash leaves the previous file whole. An error while
    writing removes the temporary file and propagates.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def strict(value: Any) -> Any:
    """NaN and infinities as null (recursively), so the JSON lit_interp writes is strict JSON."""
    if isinstance(value, dict):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(item) for item in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def json_text(value: Any, indent: int | None = 1) -> str:
    """Strict JSON (`allow_nan=False` after `strict`): what every lit_interp JSON file holds."""
    return json.dumps(strict(value), indent=indent, allow_nan=False)


def write_json(path: Path, value: Any, indent: int | None = 1) -> None:
    text = json_text(value, indent)
    atomic_write(Path(path), lambda temporary: temporary.write_text(text))


def read_regular_file(path: Path, limit_bytes: int, what: str) -> bytes:
    """The bytes of `path`, which must be a regular file (not a FIFO or device) of at most `limit_bytes`.

    A FIFO would block the read forever and `/dev/zero` would fill memory: both are refused, as
    is a file over the limit, with a one-line ConfigError naming `what` and the path.
    """
    path = Path(path)
    try:
        info = path.stat()
    except OSError as error:
        raise ConfigError(f"{what} {path} cannot be read ({error.strerror or error})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{what} {path} is not a regular file; pass a file written by lit_interp")
    if info.st_size > limit_bytes:
        raise ConfigError(
            f"{what} {path} is {info.st_size / 2**20:.3g} MiB, more than the {limit_bytes / 2**20:.3g} MiB "
            "lit_interp reads; pass a file written by lit_interp"
        )
    try:
        with open(path, "rb") as file:
            data = file.read(limit_bytes + 1)
    except OSError as error:
        raise ConfigError(f"{what} {path} cannot be read ({error.strerror or error})") from None
    if len(data) > limit_bytes:
        raise ConfigError(f"{what} {path} grew past {limit_bytes / 2**20:.3g} MiB while being read")
    return data
