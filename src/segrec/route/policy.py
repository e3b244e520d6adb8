"""Routing policies: which tier serves each segment, decided on validation data.

The decision is made from a table of per-segment validation NDCG@10 per tier
(and, for the cost-aware policies of issue 5, each tier's cost), never assumed:
published evidence says the large model often helps sparse users most.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["choose_accuracy"]


def choose_accuracy(table: pd.DataFrame, *, min_gain: float = 0.0, default: str = "global") -> dict[int, str]:
    """The best tier per segment by validation NDCG@10.

    Args:
        table: Rows ``segment, tier, users, ndcg@10`` (validation, per segment).
        min_gain: A tier other than ``default`` must beat ``default`` by more than
            this (absolute NDCG) to be chosen, so that noise in tiny segments does
            not flip the routing.
        default: The tier kept when nothing beats it by ``min_gain``.

    Returns:
        segment -> tier name.
    """
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
