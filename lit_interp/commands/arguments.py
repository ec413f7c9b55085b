"""What every argparse subcommand shares: a parser whose mistakes are one line, and the exit a user error gets."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from lit_interp.errors import ConfigError

USER_ERROR_EXIT = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors naming the subcommand (`sweep: ...; see python -m lit_interp sweep --help`)."""

    def __init__(self, command: str, description: str, **kwargs):
        super().__init__(
            prog=f"python -m lit_interp {command}",
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
            **kwargs,
        )
        self.command = command

    def error(self, message: str):
        raise ConfigError(f"{self.command}: {message}; see python -m lit_interp {self.command} --help")


def fail(message: str) -> None:
    """A user's mistake: one line on stderr, exit 2."""
    print(f"lit_interp: error: {message}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT)


@contextmanager
def user_errors() -> Iterator[None]:
    """A ConfigError raised inside becomes `fail(message)`: one line, exit 2, no traceback."""
    try:
        yield
    except ConfigError as error:
        fail(str(error))


def positive_int(name: str) -> Callable[[str], int]:
    """An argparse type: an integer >= 1 (and at most 2**31, a bound on anything we allocate per item)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} {text!r} is not an integer") from None
        if not 1 <= value <= 2**31:
            raise argparse.ArgumentTypeError(f"{name} {text} must be between 1 and {2**31}")
        return value

    return parse
