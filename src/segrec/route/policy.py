"""Routing policies: which tier serves each segment, decided on validation data.

Every policy reads one table with a row per (segment, tier): ``segment, tier,
users, ndcg@10`` (validation NDCG of the tier fitted on train only) and, for the
cost-aware policies of issue 5, ``flops`` (mean analytic FLOPs per request of
that tier for that segment's users). The decision is made from these numbers,
never assumed: published evidence says the large model often helps sparse users
most, and on ml-100k heavy users gain the least from the Transformer while they
cost the most (its FLOPs grow with history length).

* :func:`choose_accuracy`: the best tier per segment.
* :func:`choose_budget`: the routing with the highest user-weighted NDCG whose
  user-weighted mean FLOPs per request stay within a budget (an exact
  multiple-choice knapsack over segments, by Pareto-front merging).
* :func:`choose_rules`: value tiers, e.g. heavy users to the large model and
  light ones to a small one; configurable, with per-segment overrides.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError

__all__ = [
    "RoutingPolicy",
    "RulesConfig",
    "best_tier_cost",
    "choose_accuracy",
    "choose_budget",
    "choose_rules",
    "routing_summary",
    "segment_activity",
]

log = logging.getLogger(__name__)


def choose_accuracy(table: pd.DataFrame, *, min_gain: float = 0.0, default: str = "global") -> dict[int, str]:
    """The best tier per segment by validation NDCG@10.

    A table with a ``chosen`` column (a composite's: its selection with shrinkage and
    cross-fitted gates, :mod:`segrec.route.selection`) routes each segment to its chosen
    row instead: the highest in-sample NDCG of ~10 tiers and blends is optimistic.

    Args:
        table: Rows ``segment, tier, users, ndcg@10`` (validation, per segment).
        min_gain: A tier other than ``default`` must beat ``default`` by more than
            this (absolute NDCG) to be chosen, so that noise in tiny segments does
            not flip the routing.
        default: The tier kept when nothing beats it by ``min_gain``.

    Returns:
        segment -> tier name.
    """
    if "chosen" in table.columns and table["chosen"].any():
        picked = table[table["chosen"].astype(bool)]
        routing = {int(s): str(t) for s, t in zip(picked["segment"], picked["tier"], strict=True)}
        return {int(s): routing.get(int(s), default) for s in sorted(table["segment"].unique())}
    routing: dict[int, str] = {}
    for seg, rows in table.groupby("segment", sort=True):
        rows = rows.dropna(subset=["ndcg@10"])
        if rows.empty:
            routing[int(seg)] = default
            continue
        best = rows.loc[rows["ndcg@10"].idxmax()]
        base = rows.loc[rows["tier"] == default, "ndcg@10"]
        if len(base) and best["tier"] != default and best["ndcg@10"] - base.iloc[0] <= min_gain:
            routing[int(seg)] = default
        else:
            routing[int(seg)] = str(best["tier"])
    return routing


def _check_columns(table: pd.DataFrame, needed: tuple[str, ...], policy: str) -> None:
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ConfigError(f"the {policy!r} routing policy needs columns {missing} in the validation table; "
                          f"got {list(table.columns)}")


def routing_summary(table: pd.DataFrame, routing: dict[int, str]) -> dict[str, float]:
    """User-weighted validation NDCG@10 and mean FLOPs per request of one routing.

    Args:
        table: The per-(segment, tier) table (``flops`` optional).
        routing: segment -> tier.

    Returns:
        ``ndcg@10`` and, when the table has costs, ``flops`` (both means over users).
    """
    picked = table[[routing.get(int(s)) == t for s, t in zip(table["segment"], table["tier"], strict=True)]]
    w = picked["users"].to_numpy(np.float64)
    total = w.sum() if w.sum() > 0 else 1.0
    out = {"ndcg@10": float(np.nansum(picked["ndcg@10"].to_numpy() * w) / total)}
    if "flops" in picked:
        out["flops"] = float(np.nansum(picked["flops"].to_numpy() * w) / total)
    return out


def choose_budget(table: pd.DataFrame, budget: float, *, default: str = "global",
                  max_front: int = 20000) -> dict[int, str]:
    """The routing with the best user-weighted validation NDCG@10 within a FLOPs budget.

    A multiple-choice knapsack: each segment picks one tier; value = users x
    NDCG, cost = users x mean FLOPs. Solved exactly by merging Pareto fronts of
    (cost, value) segment by segment, which stays small for the few segments and
    tiers a system has (``max_front`` caps it, keeping an evenly spread subset).

    Args:
        table: Rows ``segment, tier, users, ndcg@10, flops``.
        budget: Most mean FLOPs per request (over users), e.g. 0.3 x the large tier's.
        default: Tier used for a segment where no tier has a validation score.
        max_front: Most Pareto states kept between segments.

    Returns:
        segment -> tier. When even the cheapest routing exceeds the budget it is
        returned (with a warning in the log): a request is never left unserved.
    """
    _check_columns(table, ("segment", "tier", "users", "ndcg@10", "flops"), "budget")
    if not np.isfinite(budget) or budget < 0:
        raise ConfigError(f"The 'budget' of the budget routing policy must be a number >= 0. Got {budget!r}.")
    segments = sorted(int(s) for s in table["segment"].unique())
    total_users = float(table.groupby("segment")["users"].first().sum()) or 1.0
    # front: list of (cost, value, choices) sorted by cost, value strictly increasing
    front: list[tuple[float, float, tuple[str, ...]]] = [(0.0, 0.0, ())]
    for seg in segments:
        rows = table[(table["segment"] == seg) & table["ndcg@10"].notna() & table["flops"].notna()]
        if rows.empty:
            rows = table[(table["segment"] == seg) & (table["tier"] == default)].assign(**{"ndcg@10": 0.0})
            if rows.empty or rows["flops"].isna().all():
                rows = pd.DataFrame({"tier": [default], "users": [0], "ndcg@10": [0.0], "flops": [0.0]})
        options = [(float(n) * float(f) / total_users, float(n) * float(v) / total_users, str(t))
                   for t, n, f, v in zip(rows["tier"], rows["users"], rows["flops"], rows["ndcg@10"],
                                         strict=True)]
        merged = [(c + oc, v + ov, ch + (t,)) for c, v, ch in front for oc, ov, t in options]
        front = _pareto(merged)
        if len(front) > max_front:
            keep = np.unique(np.linspace(0, len(front) - 1, max_front).round().astype(int))
            front = [front[i] for i in keep]
    feasible = [s for s in front if s[0] <= budget * (1 + 1e-12)]
    if feasible:
        cost, value, choice = feasible[-1]  # highest value within budget (values rise with cost)
    else:
        cost, value, choice = front[0]
        log.warning("budget routing: even the cheapest routing costs %.4g FLOPs/request > budget %.4g; "
                    "using the cheapest", cost, budget)
    return dict(zip(segments, choice, strict=True))


def _pareto(states: list[tuple[float, float, tuple[str, ...]]]) -> list[tuple[float, float, tuple[str, ...]]]:
    """Non-dominated (cost, value) states, cheapest first, each more valuable than the last."""
    states = sorted(states, key=lambda s: (s[0], -s[1]))
    out: list[tuple[float, float, tuple[str, ...]]] = []
    for s in states:
        if not out or s[1] > out[-1][1] + 1e-15:
            out.append(s)
    return out


ActivityLevel = Literal["light", "medium", "heavy"]


class RulesConfig(BaseModel):
    """Value-tier routing rules (the ``rules`` policy).

    A segment's activity level is where its median fit-history length falls
    among all users' activity terciles (the protocol's light / medium / heavy).

    Example:
        >>> RulesConfig(activity={"heavy": "global", "medium": "local", "light": "popularity"})
        ... # doctest: +ELLIPSIS
        RulesConfig(...)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    activity: dict[ActivityLevel, str] = Field(
        default_factory=lambda: {"heavy": "global", "medium": "local", "light": "local"})
    """Activity level -> tier: by default heavy users get the large model, others a small one."""
    segments: dict[int, str] = Field(default_factory=dict)
    """Explicit segment -> tier overrides (win over ``activity``)."""
    new_users: str | None = "local"
    """Tier for brand-new users (None = their assigned segment's tier)."""


def choose_rules(table: pd.DataFrame, rules: RulesConfig, *, available: set[str] | None = None,
                 default: str = "global") -> dict[int, str]:
    """Route segments by value tier (activity) and explicit overrides.

    Args:
        table: Rows with ``segment`` and ``median_history`` (the segment's median
            fit-history length) and ``q1``, ``q2`` (the population's activity terciles),
            e.g. from :func:`segment_activity`.
        rules: The rules.
        available: Fitted tier names; a rule naming another tier falls back to ``default``.
        default: Tier for segments no rule covers.

    Returns:
        segment -> tier.
    """
    _check_columns(table, ("segment", "median_history", "q1", "q2"), "rules")
    routing: dict[int, str] = {}
    for row in table.drop_duplicates("segment").itertuples(index=False):
        seg = int(row.segment)
        h = row.median_history
        level = "light" if h <= row.q1 else "medium" if h <= row.q2 else "heavy"
        tier = rules.segments.get(seg, rules.activity.get(level, default))
        if available is not None and tier not in available:
            log.warning("rules routing: tier %r for segment %d is not fitted; using %r", tier, seg, default)
            tier = default
        routing[seg] = tier
    return routing


def segment_activity(segments: np.ndarray, lengths: np.ndarray) -> pd.DataFrame:
    """Median fit-history length per segment, with the population's activity terciles.

    Args:
        segments: int array (n_users,), segment per dense user (-1 = none).
        lengths: Fit-history length per dense user.

    Returns:
        Rows ``segment, users, median_history, q1, q2`` (users with history only).
    """
    active = lengths > 0
    q1, q2 = np.quantile(lengths[active], [1 / 3, 2 / 3]) if active.any() else (0.0, 0.0)
    rows = []
    for s in np.unique(segments[(segments >= 0) & active]):
        m = (segments == s) & active
        rows.append({"segment": int(s), "users": int(m.sum()), "median_history": float(np.median(lengths[m])),
                     "q1": float(q1), "q2": float(q2)})
    return pd.DataFrame(rows, columns=["segment", "users", "median_history", "q1", "q2"])


class RoutingPolicy(BaseModel):
    """How a composite routes its segments (issue 5), as one frozen value.

    ``choose`` reads the per-(segment, tier) validation table (with costs) and
    returns segment -> tier; the table never comes from test data.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["accuracy", "budget", "rules"] = "accuracy"
    """The best tier per segment on validation NDCG@10; the best routing within a FLOPs budget;
    or value-tier rules."""
    min_gain: float = Field(0.0, ge=0.0)
    """A tier must beat the default tier by more than this validation NDCG@10 to be routed to."""
    gate_z: float = Field(1.0, ge=0.0)
    """``accuracy``: a segment leaves the best single system only where its cross-fitted gain
    clears ``min_gain`` by this many standard errors (and the routed system is served by
    default only where its honest gain over the best single system does)."""
    default_tier: str = "global"
    """Tier kept for a segment when no other tier beats it (and for unsegmented users)."""
    budget_flops: float | None = Field(None, ge=0)
    """``budget``: most mean FLOPs per request (absolute)."""
    budget_fraction: float | None = Field(None, ge=0)
    """``budget``: budget as a share of the mean FLOPs of the tier with the best overall
    validation NDCG@10 (e.g. 0.3); used when ``budget_flops`` is None."""
    rules: RulesConfig = RulesConfig()
    """``rules``: activity level -> tier, per-segment overrides, new-user tier."""

    def choose(self, table: pd.DataFrame | None, segments: np.ndarray, lengths: np.ndarray,
               available: set[str]) -> dict[int, str]:
        """Segment -> tier by this policy.

        Args:
            table: Validation rows ``segment, tier, users, ndcg@10[, flops]``; None when
                the composite was given a fixed routing (then only ``rules`` works).
            segments: Segment per dense fit user.
            lengths: Fit-history length per dense user.
            available: Fitted tier names.
        """
        if self.kind == "rules":
            return choose_rules(segment_activity(segments, np.asarray(lengths, np.float64)), self.rules,
                                available=available, default=self.default_tier)
        if table is None:
            raise ConfigError(f"the {self.kind!r} policy needs the validation table; this model has none "
                              "(fitted with a fixed routing=)")
        if self.kind == "accuracy":
            return choose_accuracy(table, min_gain=self.min_gain, default=self.default_tier)
        return choose_budget(table, self.budget_from(table), default=self.default_tier)

    def budget_from(self, table: pd.DataFrame) -> float:
        """The FLOPs budget: absolute, or a share of the most accurate tier's cost."""
        if self.budget_flops is not None:
            return float(self.budget_flops)
        if self.budget_fraction is None:
            raise ConfigError("the 'budget' routing policy needs budget_flops or budget_fraction",
                              key="budget_flops")
        return float(self.budget_fraction) * best_tier_cost(table)[1]

    @property
    def new_user_tier(self) -> str | None:
        """The tier for brand-new users the policy fixes (rules only), else None (their segment's)."""
        return self.rules.new_users if self.kind == "rules" else None


def best_tier_cost(table: pd.DataFrame) -> tuple[str, float]:
    """The single tier with the best user-weighted validation NDCG@10, and its mean FLOPs."""
    best, best_score, best_flops = "", -np.inf, np.nan
    for tier in table["tier"].unique():
        rows = table[table["tier"] == tier]
        summary = routing_summary(table, {int(s): tier for s in rows["segment"]})
        if summary["ndcg@10"] > best_score:
            best, best_score, best_flops = str(tier), summary["ndcg@10"], summary.get("flops", np.nan)
    return best, float(best_flops)
