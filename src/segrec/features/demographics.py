"""Demographics block: user-table attributes, numeric as-is, categorical one-hot.

Numeric columns pass through (the pipeline standardises them); categorical
columns become one-hot indicators of their frequent levels (share >=
``min_level_share``, at most ``max_levels``), so identifier-like columns such as
zip codes collapse into nothing instead of thousands of one-user columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field

from ..types import Interactions
from .base import BlockConfig, FeatureBlock, _DenseNew

__all__ = ["DemographicsConfig", "DemographicsFeatures"]


class DemographicsConfig(BlockConfig):
    """Settings of :class:`DemographicsFeatures`."""

    columns: tuple[str, ...] | None = None
    """Attribute columns to use; None uses every column except ``exclude``."""
    exclude: tuple[str, ...] = ("user_id",)
    """Columns never used (identifiers)."""
    max_levels: int = Field(20, ge=1)
    """At most this many one-hot levels per categorical column."""
    min_level_share: float = Field(0.01, ge=0, le=1)
    """Levels rarer than this share of users are dropped (all-zero row = rare/unknown)."""


class DemographicsFeatures(FeatureBlock):
    """One-hot categorical and numeric user attributes from ``Interactions.user_table``.

    Without a users table the block has no columns (and the pipeline drops it).

    Attributes:
        numeric_: Numeric columns used, with their fit means (for missing values).
        levels_: Categorical column -> kept levels.
    """

    Config = DemographicsConfig
    name = "demographics"

    def _fit(self, data: Interactions) -> None:
        table = data.user_table
        self.numeric_: dict[str, float] = {}
        self.levels_: dict[str, tuple[str, ...]] = {}
        if table is None:
            self.columns_ = ()
            return
        use = self.config.columns or tuple(c for c in table.columns if c not in self.config.exclude)
        missing = [c for c in use if c not in table.columns]
        if missing:
            raise KeyError(f"users table has no column(s) {missing}; columns are {list(table.columns)}")
        cols: list[str] = []
        for c in use:
            s = table[c]
            if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
                self.numeric_[c] = float(s.mean()) if s.notna().any() else 0.0
                cols.append(c)
            else:
                share = s.astype("string").value_counts(normalize=True, dropna=True)
                share = (
                    share.rename_axis("level")
                    .reset_index()
                    .sort_values(["proportion", "level"], ascending=[False, True])
                )
                kept = share[share["proportion"] >= self.config.min_level_share]["level"]
                kept = tuple(str(v) for v in kept.head(self.config.max_levels))
                if len(kept) > 1 or (len(kept) == 1 and share["proportion"].iloc[0] < 1.0):
                    self.levels_[c] = kept
                    cols.extend(f"{c}={v}" for v in kept)
        self.columns_ = tuple(cols)

    def _transform(self, data: Interactions | None, new: _DenseNew | None) -> np.ndarray:
        if data is not None:
            table, n = data.user_table, data.n_users
        else:
            table, n = new.attributes, new.n
        if table is None:
            table = pd.DataFrame(index=range(n))
        parts = []
        for c, mean in self.numeric_.items():
            v = pd.to_numeric(table[c], errors="coerce") if c in table else pd.Series(np.nan, index=range(n))
            parts.append(v.fillna(mean).to_numpy(np.float64)[:, None])
        for c, kept in self.levels_.items():
            # plain str with "" for missing: pandas' NA has no truth value in comparisons
            v = (
                table[c].astype("string").fillna("").to_numpy(dtype=object)
                if c in table
                else np.full(n, "", object)
            )
            parts.append((v[:, None] == np.asarray(kept, dtype=object)[None, :]).astype(np.float64))
        return np.concatenate(parts, axis=1) if parts else np.zeros((n, 0))
