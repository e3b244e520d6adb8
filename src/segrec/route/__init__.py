"""Routing: the segment-aware composite, its policies, its fallback chain and the request path.

:class:`SegmentedRecommender` (``composite.py``) owns a segmenter, its member models
and the routing; :class:`FallbackChain` (``fallback.py``) is the one fallback rule;
:class:`RoutingPolicy` (``policy.py``) decides each segment's tier from validation;
:class:`Router` (``router.py``) answers one request at a time.
"""

from .composite import SegmentedConfig, SegmentedRecommender
from .fallback import FallbackChain
from .policy import (
    RoutingPolicy,
    RulesConfig,
    choose_accuracy,
    choose_budget,
    choose_rules,
    routing_summary,
    segment_activity,
)
from .router import Router, Served

__all__ = [
    "FallbackChain",
    "Router",
    "RoutingPolicy",
    "RulesConfig",
    "SegmentedConfig",
    "SegmentedRecommender",
    "Served",
    "choose_accuracy",
    "choose_budget",
    "choose_rules",
    "routing_summary",
    "segment_activity",
]
