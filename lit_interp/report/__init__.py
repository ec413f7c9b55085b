"""Interactive, offline HTML reports (plotly + Jinja2) and cheap TensorBoard images of analysis results.

The report functions are imported on first use: the training callbacks import `report.images`
(numpy only) and must not pay for plotly and Jinja2 at their first snapshot.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "checkpoint_report": "lit_interp.report.checkpoint",
    "Snapshot": "lit_interp.report.run",
    "read_snapshots": "lit_interp.report.run",
    "run_report": "lit_interp.report.run",
    "trajectories": "lit_interp.report.run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lit_interp.report' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
