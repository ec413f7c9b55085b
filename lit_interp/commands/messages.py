"""One line for a user's mistake: what a jsonargparse, Lightning or torch error says, reduced to the key and the fix."""

from __future__ import annotations

import re

from lit_interp.errors import ConfigError


def user_error_message(error: BaseException) -> str | None:
    """One line for a mistake the user made, or None for a bug (which keeps its traceback)."""
    from jsonargparse import ArgumentError

    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ConfigError):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    if type(error).__module__.startswith("omegaconf"):
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"a config interpolation cannot be resolved ({first}); fix the ${{...}} reference"
    if isinstance(error, UnicodeDecodeError):
        return f"a config file is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8"
    if is_out_of_memory(error):
        return f"out of memory ({str(error).splitlines()[0][:200]}); lower data.init_args.batch_size or the model size"
    if not isinstance(error, ArgumentError):
        return None
    return argument_error_message(str(error))


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in str(error)


def argument_error_message(text: str) -> str:
    """The innermost key and reason of a jsonargparse error, e.g. `model.init_args.lr: expected a float, got 'abc'`."""
    keys = re.findall(r'Parser key "([^"]+)"', text)
    where = ".".join(keys[:1] + [f"init_args.{k}" for k in keys[1:]]) if len(keys) > 1 else (keys[0] if keys else "")
    prefix = f"{where}: " if where else ""
    listed = [line.strip()[2:].strip() for line in text.splitlines() if line.strip().startswith("- ")]
    reasons = [line for line in listed if not line.startswith(("Expected a <class", "Problem with given class_path"))]
    if reasons:  # a class that failed for a reason of its own (e.g. a logger's setup): that reason
        return prefix + reasons[0].split(". ")[0].rstrip(".")
    expected = re.findall(r"Expected a <class '(\w+)'>", text)
    got = re.search(r"Got value: (.+)|Given value: (.+)", text)
    value = (got.group(1) or got.group(2)).strip() if got else None
    expected = [name for name in dict.fromkeys(expected) if name != "NoneType"]
    if expected:
        kinds = " or ".join(f"a {name}" if name[0] not in "aeiou" else f"an {name}" for name in expected)
        return f"{prefix}expected {kinds}, got {value!r}"
    problem = re.search(r"Problem with given class_path '([^']+)':\s*\n\s*(.+)", text)
    if problem:
        return (
            f"{prefix}{problem.group(2).strip()} (class_path {problem.group(1)}); check the name against --print_config"
        )
    text = re.sub(r'Parser key "[^"]+":\s*', "", text)
    noise = ("Does not validate", "Subtypes:", "Errors:", "Given value", "Parser key")
    lines = [
        line.strip(" -") for line in text.splitlines() if line.strip(" -") and not line.strip(" -").startswith(noise)
    ]
    return prefix + (lines[0] if lines else text.strip().splitlines()[0])
