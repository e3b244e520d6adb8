"""Routing: which model tier serves each segment, and how a request reaches it."""

from .policy import (
    RulesConfig,
    choose_accuracy,
    choose_budget,
    choose_rules,
    routing_summary,
    segment_activity,
)

__all__ = [
    "RulesConfig",
    "choose_accuracy",
    "choose_budget",
    "choose_rules",
    "routing_summary",
    "segment_activity",
]
