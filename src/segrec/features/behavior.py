"""Behaviour block: how much, how recently, how positively and how mainstream a user consumes.

Columns: ``log_activity`` (log1p of interactions), ``recency_days`` (days from the
user's last interaction to the end of the fit data), ``tenure_days``,
``rating_mean`` and ``rating_std`` (only when the data has real ratings),
``pop_affinity`` (mean log1p popularity of the user's items) and ``cat=<name>``
(share of the user's interactions in each item category, from the items table).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from ..types import Interactions
from .base import BlockConfig, FeatureBlock, _DenseNew, user_slices

__all__ = ["BehaviorConfig", "BehaviorFeatures", "behavior_stats", "item_category_matrix"]

_DAY = 86400.0


class BehaviorConfig(BlockConfig):
    """Settings of :class:`BehaviorFeatures`."""

    categories: bool = True
    """Add one share column per item category (needs ``item_table['categories']``)."""
    max_categories: int = Field(50, ge=1)
    """Keep at most this many categories, the most frequent in the fit data."""
    timestamps_are_seconds: bool = True
    """Timestamps are epoch seconds (recency in days); False treats them as ordinal steps."""


def item_category_matrix(
    item_table: pd.DataFrame | None,
    n_items: int,
    max_categories: int = 50,
    names: tuple[str, ...] | None = None,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Binary item x category matrix from a ``|``-joined ``categories`` column.

    Args:
        item_table: Items table (one row per dense item) or None.
        n_items: Catalogue size.
        max_categories: Cap on categories kept when ``names`` is not given.
        names: Fixed category list (e.g. learned in fit); None derives it by frequency.

    Returns:
        ``(matrix, names)``: float32 (n_items, n_categories) and the category names.
    """
    if item_table is None or "categories" not in item_table:
        return np.zeros((n_items, 0), np.float32), ()
    cats = item_table["categories"].fillna("").astype(str).str.split("|")
    exploded = cats.explode().str.strip()
    exploded = exploded[exploded != ""]
    if names is None:
        counts = exploded.value_counts(sort=True)
        # stable order: frequency first, then name, so the same data gives the same columns
        counts = counts.rename_axis("name").reset_index()
        counts = counts.sort_values(["count", "name"], ascending=[False, True])
        names = tuple(counts["name"].head(max_categories))
    col = pd.Index(names).get_indexer(exploded.to_numpy())
    rows = exploded.index.to_numpy()
    keep = col >= 0
    mat = np.zeros((n_items, len(names)), np.float32)
    mat[rows[keep], col[keep]] = 1.0
    return mat, tuple(names)


def behavior_stats(data: Interactions, reference_time: float | None = None) -> pd.DataFrame:
    """Raw per-user statistics (one row per dense user) used by tiers and profiles.

    Columns: ``n_interactions``, ``recency_days``, ``tenure_days``, ``rating_mean``.
    Users without rows get 0 interactions and NaN elsewhere.
    """
    n = data.n_users
    counts = data.user_counts()
    ref = float(data.timestamps.max()) if reference_time is None and len(data) else (reference_time or 0.0)
    first = np.full(n, np.nan)
    last = np.full(n, np.nan)
    has = counts > 0
    starts = data.indptr[:-1][has]
    ends = data.indptr[1:][has] - 1
    first[has] = data.timestamps[starts]
    last[has] = data.timestamps[ends]
    sums = np.bincount(data.users, weights=data.ratings, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(has, sums / np.maximum(counts, 1), np.nan)
    return pd.DataFrame(
        {
            "n_interactions": counts,
            "recency_days": (ref - last) / _DAY,
            "tenure_days": (last - first) / _DAY,
            "rating_mean": mean,
        }
    )


class BehaviorFeatures(FeatureBlock):
    """Activity, recency, rating, popularity-affinity and category-share columns.

    Example:
        >>> block = BehaviorFeatures(categories=False).fit(fit_data)  # doctest: +SKIP
        >>> block.transform(fit_data).shape  # doctest: +SKIP
        (n_users, 5)

    Attributes:
        columns_: Column names.
        reference_time_: Last timestamp of the fit data (recency is measured to it).
        log_pop_: float64 (n_items,), log1p interactions per item in the fit data.
        cat_matrix_: float32 (n_items, n_categories).
        fill_: Column means over fit users with data, used for users without it.
    """

    Config = BehaviorConfig
    name = "behavior"

    def _fit(self, data: Interactions) -> None:
        self.reference_time_ = float(data.timestamps.max()) if len(data) else 0.0
        self.log_pop_ = np.log1p(data.item_counts().astype(np.float64))
        r = data.ratings
        self.has_ratings_ = bool(len(r) and float(r.std()) > 0)
        if self.config.categories:
            self.cat_matrix_, self.cat_names_ = item_category_matrix(
                data.item_table, data.n_items, self.config.max_categories
            )
        else:
            self.cat_matrix_, self.cat_names_ = np.zeros((data.n_items, 0), np.float32), ()
        cols = ["log_activity", "recency_days", "tenure_days"]
        if self.has_ratings_:
            cols += ["rating_mean", "rating_std"]
        cols += ["pop_affinity"] + [f"cat={c}" for c in self.cat_names_]
        self.columns_ = tuple(cols)
        self.fill_ = None
        raw = self._raw(data, None)
        has = data.user_counts() > 0
        self.fill_ = np.nanmean(raw[has], axis=0) if has.any() else np.zeros(raw.shape[1])
        self.fill_ = np.nan_to_num(self.fill_)

    def _transform(self, data: Interactions | None, new: _DenseNew | None) -> np.ndarray:
        raw = self._raw(data, new)
        nan = np.isnan(raw)
        if nan.any():
            raw[nan] = np.broadcast_to(self.fill_, raw.shape)[nan]
        return raw

    def _raw(self, data: Interactions | None, new: _DenseNew | None) -> np.ndarray:
        indptr, items, _ = user_slices(data, new)
        n = len(indptr) - 1
        counts = np.diff(indptr).astype(np.float64)
        users = np.repeat(np.arange(n), np.diff(indptr))
        has = counts > 0
        denom = np.maximum(counts, 1.0)
        cols = [np.log1p(counts)]
        scale = _DAY if self.config.timestamps_are_seconds else 1.0
        if data is not None:
            stats = behavior_stats(data, self.reference_time_)
            recency = np.clip(stats["recency_days"].to_numpy() * _DAY / scale, 0, None)
            cols += [recency, stats["tenure_days"].to_numpy() * _DAY / scale]
            ratings = data.ratings.astype(np.float64)
        else:
            # a new user is by definition active now and has no tenure yet
            cols += [np.zeros(n), np.zeros(n)]
            ratings = None
        if self.has_ratings_:
            if ratings is None:
                cols += [np.full(n, np.nan), np.full(n, np.nan)]
            else:
                s1 = np.bincount(users, weights=ratings, minlength=n)
                s2 = np.bincount(users, weights=ratings**2, minlength=n)
                mean = s1 / denom
                var = np.clip(s2 / denom - mean**2, 0, None)
                cols += [np.where(has, mean, np.nan), np.where(has, np.sqrt(var), np.nan)]
        pop = np.bincount(users, weights=self.log_pop_[items], minlength=n) / denom
        cols.append(np.where(has, pop, np.nan))
        out = np.column_stack(cols)
        if self.cat_matrix_.shape[1]:
            rows = sp.csr_matrix((np.ones(len(items)), items, indptr), shape=(n, len(self.log_pop_)))
            shares = np.asarray(rows @ self.cat_matrix_, dtype=np.float64) / denom[:, None]
            shares[~has] = np.nan
            out = np.concatenate([out, shares], axis=1)
        return out.astype(np.float64)
