"""Rule-based value/activity tiers: new / light / regular / heavy (and optionally dormant).

The segmentation a product team already speaks: a user with at most
``new_max_interactions`` interactions is ``new``; the rest are cut at activity
quantiles into ``light`` / ``regular`` / ``heavy``; with ``dormant_days`` set,
users whose last interaction is older than that are ``dormant``. Cuts are learned
in ``fit`` as absolute counts, so ``assign`` applies the same rules to new users.

Example:
    >>> import pandas as pd
    >>> seg = TierSegmenter(new_max_interactions=2, activity_quantiles=(0.5, 0.9))
    >>> seg.fit(features).segmentation_.names  # doctest: +SKIP
    ('light', 'regular', 'heavy', 'new')
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from ..errors import SegmentationError
from ..features.base import UserFeatures
from .base import Segmenter, SegmenterConfig, segment_means

__all__ = ["TIER_NAMES", "TierConfig", "TierSegmenter"]

#: Raw tier codes, in this order.
TIER_NAMES = ("new", "light", "regular", "heavy", "dormant")


class TierConfig(SegmenterConfig):
    """Settings of :class:`TierSegmenter`; ``n_segments`` is ignored (the rules decide)."""

    n_segments: int | Literal["auto"] = "auto"
    """Ignored: the number of tiers follows from the rules."""
    new_max_interactions: int = Field(5, ge=0)
    """Users with at most this many interactions are ``new`` (0 disables the tier)."""
    activity_quantiles: tuple[float, float] = (0.5, 0.9)
    """Quantiles of activity (among non-new users) cutting light | regular | heavy."""
    dormant_days: float | None = Field(None, gt=0)
    """Users inactive for longer than this many days are ``dormant``; None disables it."""

    @field_validator("activity_quantiles")
    @classmethod
    def _check_q(cls, v):
        if not 0 < v[0] < v[1] < 1:
            raise ValueError(f"activity_quantiles must satisfy 0 < q1 < q2 < 1; got {v}")
        return v


class TierSegmenter(Segmenter):
    """Activity/recency tiers from ``UserFeatures.stats``.

    Attributes:
        labels_: int64 (n_users,).
        activity_cuts_: (c1, c2) interaction counts: light <= c1 < regular <= c2 < heavy.
        centers_: float32 segment means in feature space (for comparison only).
    """

    Config = TierConfig
    name = "tiers"
    fixed_k = True

    def _stats(self, features):
        if not isinstance(features, UserFeatures) or "n_interactions" not in features.stats:
            raise SegmentationError("TierSegmenter needs UserFeatures with stats (from FeaturePipeline)")
        s = features.stats
        n = s["n_interactions"].to_numpy(np.float64)
        rec = s["recency_days"].to_numpy(np.float64) if "recency_days" in s else np.zeros(len(n))
        return n, np.nan_to_num(rec, nan=0.0)

    def _rules(self, n: np.ndarray, rec: np.ndarray) -> np.ndarray:
        c1, c2 = self.activity_cuts_
        raw = np.where(n <= c1, 1, np.where(n <= c2, 2, 3))
        raw = np.where(n <= self.config.new_max_interactions, 0, raw)
        if self.config.dormant_days is not None:
            raw = np.where((raw != 0) & (rec > self.config.dormant_days), 4, raw)
        return raw.astype(np.int64)

    def _fit_k(self, x, k, features):
        n, rec = self._stats(features)
        established = n[n > self.config.new_max_interactions]
        base = established if len(established) else n
        q1, q2 = self.config.activity_quantiles
        self.activity_cuts_ = (float(np.quantile(base, q1)), float(np.quantile(base, q2)))
        raw = self._rules(n, rec)
        self.centers_ = segment_means(x, raw, len(TIER_NAMES))
        return raw

    def _names(self):
        return tuple(TIER_NAMES[r] for r in self.raw_labels_)

    def _assign_raw(self, x, features):
        n, rec = self._stats(features)
        raw = self._rules(n, rec)
        missing = ~np.isin(raw, self.raw_labels_)
        if missing.any():
            # a tier that had no users in fit has no segment: fall back to the nearest tier code
            present = np.sort(self.raw_labels_)
            raw[missing] = present[np.abs(present[None, :] - raw[missing, None]).argmin(1)]
        return raw
