"""Analysis of a trained HookedTransformer: plain functions per idea, and `run_analysis` calling them all."""

from lit_interp.analysis.snapshot import run_analysis

__all__ = ["run_analysis"]
