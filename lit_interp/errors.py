"""User-facing errors: one line naming the bad value and the fix, never a traceback."""


class ConfigError(ValueError):
    """A mistake the user can fix (config value, path, checkpoint); the CLI prints it and exits 2."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
