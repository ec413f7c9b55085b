"""Memory estimates and the one bound every size a user or a file supplies is checked against."""

from __future__ import annotations

import os
from typing import Any

from lit_interp.errors import ConfigError

# A single allocation, model or batch may take at most this share of the machine's memory.
SHARE = 2


def machine_memory_bytes() -> int:
    """Physical memory of this machine (64 GiB when the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**36


def require_fits(needed_bytes: float, what: str, fix: str) -> None:
    """One line, "too large for this machine's memory", when `needed_bytes` exceeds the allowed share."""
    allowed = machine_memory_bytes() // SHARE
    if needed_bytes > allowed:
        raise ConfigError(
            f"{what} needs about {needed_bytes / 2**30:.3g} GiB, too large for this machine's memory "
            f"({machine_memory_bytes() / 2**30:.3g} GiB, at most half of it for one run); {fix}"
        )


def _size(hparams: dict[str, Any], key: str, default: int = 1) -> int:
    value = hparams.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def declared_parameters(hparams: dict[str, Any]) -> int:
    """An upper estimate of the parameter count that model hyperparameters (n_layers, d_model, ...) build."""
    d_model, d_attn = _size(hparams, "d_model"), _size(hparams, "n_heads") * _size(hparams, "d_head")
    per_layer = 4 * d_model * d_attn + 2 * d_model * _size(hparams, "d_mlp", 4 * d_model)
    return (
        _size(hparams, "n_layers") * per_layer
        + 2 * _size(hparams, "d_vocab") * d_model
        + _size(hparams, "n_ctx") * d_model
    )


def step_activation_bytes(cfg: Any, batch_size: int) -> int:
    """A rough upper estimate of one training step's activations (forward activations kept for backward), fp32."""
    per_token = 4 * cfg.d_model + cfg.d_vocab * 3
    per_token += cfg.n_layers * (
        8 * cfg.d_model + 4 * cfg.n_heads * cfg.d_head + 3 * cfg.n_heads * cfg.n_ctx + 2 * (cfg.d_mlp or 0)
    )
    return 4 * 2 * batch_size * cfg.n_ctx * per_token


def require_batch_fits(cfg: Any, batch_size: int, what: str = "data.batch_size") -> None:
    """A batch of `batch_size` sequences through a model of config `cfg` must fit in memory."""
    require_fits(
        step_activation_bytes(cfg, batch_size),
        f"{what}={batch_size} with n_ctx={cfg.n_ctx}",
        f"lower {what} or the context length",
    )
