"""Interactive, offline HTML reports (plotly + Jinja2): a checkpoint's analysis, a run's snapshots, many runs."""
