"""Segment profiles: who is in each segment and what they like, against the population.

For each segment: size and share, activity distribution, the categories and
items over-represented against the whole population (lift = segment share /
population share), demographic make-up, and a one-line description such as
``segment 2: 212 users (22%), heavy (median 141 vs 59 interactions); likes
Sci-Fi 1.9x, War 1.6x; gender=M 84% (1.2x), age 31``.

Example:
    >>> profiles = profile_segments(seg.labels, split.fit)  # doctest: +SKIP
    >>> for p in profiles: print(p.description)  # doctest: +SKIP
    >>> profiles_frame(profiles)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SegmentationError
from ..features.behavior import item_category_matrix
from ..types import Interactions

__all__ = ["SegmentProfile", "profile_segments", "profiles_frame"]


@dataclass(frozen=True)
class SegmentProfile:
    """One segment, described.

    Attributes:
        segment: Segment number.
        name: Readable name.
        size: Users in the segment.
        share: size / all users.
        activity: ``mean``, ``p25``, ``median``, ``p75`` interactions per user.
        top_categories: ``(category, segment share, lift)``, highest lift first.
        top_items: ``(item id, title, users share, lift)``, highest lift first.
        demographics: Column -> ``{"value", "share"/"mean", "lift"/"population"}``.
        description: One readable line.
    """

    segment: int
    name: str
    size: int
    share: float
    activity: dict[str, float]
    top_categories: list[tuple[str, float, float]] = field(default_factory=list)
    top_items: list[tuple[str, str, float, float]] = field(default_factory=list)
    demographics: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""


def _activity_word(median: float, pop_median: float) -> str:
    if pop_median <= 0:
        return "typical"
    ratio = median / pop_median
    return "heavy" if ratio >= 1.5 else "light" if ratio <= 2 / 3 else "typical"


def profile_segments(
    labels: np.ndarray,
    data: Interactions,
    *,
    names: tuple[str, ...] | None = None,
    top_n: int = 3,
    min_item_users: int = 5,
    exclude_columns: tuple[str, ...] = ("user_id",),
) -> list[SegmentProfile]:
    """Describe every segment of ``labels`` over the users of ``data``.

    Args:
        labels: int array of shape (data.n_users,), segment per dense user.
        data: Fit interactions (with optional items/users tables).
        names: Optional segment names.
        top_n: Categories, items and demographic columns listed per segment.
        min_item_users: An item must have this many users in the segment to be listed.
        exclude_columns: User-table columns never profiled (identifiers).

    Returns:
        One SegmentProfile per segment, in segment order.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (data.n_users,):
        raise SegmentationError(f"profile_segments: {len(labels)} labels for {data.n_users} users")
    k = int(labels.max()) + 1 if len(labels) else 0
    counts = data.user_counts().astype(np.float64)
    pop_median = float(np.median(counts)) if len(counts) else 0.0
    row_seg = labels[data.users]

    cat_mat, cat_names = item_category_matrix(data.item_table, data.n_items, max_categories=1000)
    if cat_names:
        per_row = cat_mat[data.items]  # (n_rows, n_categories)
        pop_cat = per_row.sum(0) / max(len(data), 1)
        seg_cat = np.zeros((k, len(cat_names)))
        np.add.at(seg_cat, row_seg, per_row)
        seg_rows = np.bincount(row_seg, minlength=k)[:, None]
        seg_cat = seg_cat / np.maximum(seg_rows, 1)

    x = data.to_csr()
    item_users = np.asarray(x.sum(0)).ravel()
    n_users = max(len(labels), 1)
    titles = None
    if data.item_table is not None and "title" in data.item_table:
        titles = data.item_table["title"].astype(str).to_numpy()

    table = data.user_table
    demo_cols = [] if table is None else [c for c in table.columns if c not in exclude_columns]

    profiles = []
    for s in range(k):
        members = labels == s
        size = int(members.sum())
        activity = _activity(counts[members], size)
        cats: list[tuple[str, float, float]] = []
        if cat_names and size:
            cats = _top_categories(seg_cat[s], pop_cat, cat_names, top_n)
        items: list[tuple[str, str, float, float]] = []
        if size:
            items = _top_items(data, x, members, size, item_users, n_users, titles, min_item_users, top_n)
        demo = _demographics(table, demo_cols, members, size)
        name = names[s] if names else f"segment {s}"
        description = _description(name, size, n_users, activity, pop_median, cats, demo, top_n)
        profiles.append(
            SegmentProfile(s, name, size, size / n_users, activity, cats, items, demo, description)
        )
    return profiles


def _activity(c: np.ndarray, size: int) -> dict[str, float]:
    """Mean and quartiles of the segment members' interaction counts ``c``."""
    return {
        "mean": float(c.mean()) if size else 0.0,
        "p25": float(np.quantile(c, 0.25)) if size else 0.0,
        "median": float(np.median(c)) if size else 0.0,
        "p75": float(np.quantile(c, 0.75)) if size else 0.0,
    }


def _top_categories(seg_cat: np.ndarray, pop_cat: np.ndarray, cat_names: list[str],
                    top_n: int) -> list[tuple[str, float, float]]:
    """The segment's ``top_n`` categories by lift over the population, with share and lift."""
    lift = seg_cat / np.where(pop_cat > 0, pop_cat, np.inf)
    ok = seg_cat >= 0.02  # ignore categories the segment barely touches
    order = [j for j in np.argsort(-lift, kind="stable") if ok[j]][:top_n]
    return [(cat_names[j], float(seg_cat[j]), float(lift[j])) for j in order]


def _top_items(data: Interactions, x, members: np.ndarray, size: int, item_users: np.ndarray, n_users: int,
               titles: np.ndarray | None, min_item_users: int,
               top_n: int) -> list[tuple[str, str, float, float]]:
    """The segment's ``top_n`` items by lift (ties: more segment users) among those it uses enough."""
    seg_users = np.asarray(x[np.flatnonzero(members)].sum(0)).ravel()
    share = seg_users / size
    lift = share / np.where(item_users > 0, item_users / n_users, np.inf)
    cand = np.flatnonzero(seg_users >= min(min_item_users, size))
    order = cand[np.lexsort((-seg_users[cand], -lift[cand]))][:top_n]
    return [
        (
            str(data.item_vocab.id(j)),
            titles[j] if titles is not None else str(data.item_vocab.id(j)),
            float(share[j]),
            float(lift[j]),
        )
        for j in order
    ]


def _demographics(table: pd.DataFrame | None, demo_cols: list[str], members: np.ndarray,
                  size: int) -> dict[str, dict[str, Any]]:
    """Per users-table column: the mean against the population, or the most over-represented level."""
    demo: dict[str, dict[str, Any]] = {}
    for col in demo_cols:
        series = table[col]
        if not size:
            continue
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            demo[col] = {"mean": float(series[members].mean()), "population": float(series.mean())}
        else:
            seg_share = series[members].astype("string").value_counts(normalize=True)
            pop_share = series.astype("string").value_counts(normalize=True)
            lift = (seg_share / pop_share.reindex(seg_share.index)).fillna(0.0)
            # the most over-represented level among those common in the segment
            common = lift[seg_share >= 0.1]
            if len(common) and len(pop_share) <= 50:
                lvl = common.sort_values(ascending=False, kind="stable").index[0]
                demo[col] = {"value": str(lvl), "share": float(seg_share[lvl]), "lift": float(lift[lvl])}
    return demo


def _description(name: str, size: int, n_users: int, activity: dict[str, float], pop_median: float,
                 cats: list[tuple[str, float, float]], demo: dict[str, dict[str, Any]], top_n: int) -> str:
    """The segment's one readable line: size, activity, liked categories, demographics."""
    parts = [
        f"{name}: {size} users ({size / n_users:.0%})",
        f"{_activity_word(activity['median'], pop_median)} (median {activity['median']:.0f} vs "
        f"{pop_median:.0f} interactions)",
    ]
    if cats:
        parts.append("likes " + ", ".join(f"{c} {lift:.1f}x" for c, _, lift in cats))
    demo_txt = []
    for col, d in list(demo.items())[:top_n]:
        if "value" in d:
            demo_txt.append(f"{col}={d['value']} {d['share']:.0%} ({d['lift']:.1f}x)")
        else:
            demo_txt.append(f"{col} {d['mean']:.0f} (pop {d['population']:.0f})")
    if demo_txt:
        parts.append(", ".join(demo_txt))
    return "; ".join(parts)


def profiles_frame(profiles: list[SegmentProfile]) -> pd.DataFrame:
    """One row per segment: size, share, activity median and the description."""
    rows = []
    for p in profiles:
        d = asdict(p)
        rows.append(
            {
                "segment": p.segment,
                "name": p.name,
                "size": p.size,
                "share": round(p.share, 4),
                "median_activity": p.activity["median"],
                "top_categories": ", ".join(f"{c} ({lift:.1f}x)" for c, _, lift in d["top_categories"]),
                "description": p.description,
            }
        )
    return pd.DataFrame(rows)
