"""Interactive, offline HTML reports (plotly + Jinja2) and cheap TensorBoard images of analysis results."""

from lit_interp.report.checkpoint import checkpoint_report
from lit_interp.report.run import Snapshot, read_snapshots, run_report, trajectories

__all__ = ["Snapshot", "checkpoint_report", "read_snapshots", "run_report", "trajectories"]
