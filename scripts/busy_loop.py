"""Saturate the machine's cores with busy-loop processes for a benchmark's loaded runs, and stop them after."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

SPIN = "while True: pass"


@contextlib.contextmanager
def busy_cores(count: int) -> Iterator[None]:
    """`count` processes each spinning one core at normal priority (0: nothing started), killed on exit."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait()


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())
