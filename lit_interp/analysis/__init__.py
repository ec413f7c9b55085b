"""Analysis of a HookedTransformer: plain functions per idea, a registry of where each applies, and `run_analysis`."""

from lit_interp.analysis.examples import top_k_predictions
from lit_interp.analysis.interventions import LowRankIdentityQK, ZeroHeadOutput, edited_copy, edited_losses
from lit_interp.analysis.patterns import attention_entropy
from lit_interp.analysis.registry import Analysis, AnalysisContext
from lit_interp.analysis.snapshot import run_analysis
from lit_interp.analysis.weights import processed_copy

__all__ = [
    "Analysis",
    "AnalysisContext",
    "LowRankIdentityQK",
    "ZeroHeadOutput",
    "attention_entropy",
    "edited_copy",
    "edited_losses",
    "processed_copy",
    "run_analysis",
    "top_k_predictions",
]
