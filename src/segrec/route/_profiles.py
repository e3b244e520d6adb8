"""Segment profiles: what the API's ``/v1/segments`` and the dashboard show per segment."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def segment_profiles(router: Any, *, top_n: int = 5,
                     item_table: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """One JSON-able profile per segment: size, routing, activity, top items and categories.

    Args:
        router: The :class:`~segrec.route.router.Router` whose segments are profiled (typed
            loosely: the router imports this module).
        top_n: Items (and categories) listed per segment.
        item_table: Items table in dense item order with a ``categories``
            column (``|``-joined) to list each segment's top categories.
    """
    lengths = np.diff(router._seen.indptr)
    out = []
    for s in np.unique(router.segments[router.segments >= 0]):
        members = router.segments == s
        counts = router.model.segment_popularity(int(s))
        top = np.argsort(-counts, kind="stable")[:top_n]
        prof: dict[str, Any] = {
            "segment": int(s), "users": int(members.sum()), "tier": router.tier_of_segment(int(s)),
            "new_user_tier": router.model.new_user_tier(int(s)),
            "median_history": float(np.median(lengths[members])) if members.any() else 0.0,
            "top_items": [{"item_id": str(router._item_ids[i]), "title": None if router.titles is None
                           else str(router.titles[i]), "interactions": int(counts[i])} for i in top],
        }
        if item_table is not None and "categories" in item_table:
            cats = item_table["categories"].fillna("").astype(str).str.get_dummies(sep="|")
            weights = cats.to_numpy(np.float64).T @ np.asarray(counts, np.float64)
            order = np.argsort(-weights, kind="stable")[:top_n]
            total = weights.sum() or 1.0
            prof["top_categories"] = [{"category": str(cats.columns[i]),
                                       "share": float(weights[i] / total)}
                                      for i in order if weights[i] > 0]
        validation = router.model.validation_
        if validation is not None:
            rows = validation[(validation["segment"] == s) & (validation["tier"] == prof["tier"])]
            if len(rows):
                prof["validation_ndcg@10"] = float(rows["ndcg@10"].iloc[0])
                if "flops" in rows:
                    prof["flops_per_request"] = float(rows["flops"].iloc[0])
        out.append(prof)
    return out
