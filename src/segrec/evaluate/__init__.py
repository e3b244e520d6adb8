"""Evaluation: pure metrics, top-k ranking and the protocol's reports."""

from .report import EvalReport, activity_terciles, bootstrap_diff, evaluate

__all__ = ["EvalReport", "activity_terciles", "bootstrap_diff", "evaluate"]
