"""The composite's serving side: place a new user, score them from their items, cost a request.

Placement is the composite's own segmenter (the fitted
:class:`~segrec.segment.SegmentationPipeline` that made the segments), so a new
user lands where a fit user with the same items and attributes would; scoring
goes through the segment's new-user tier and the same fallback chain as known
users. A user with attributes but no items gets their segment's popular items.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError
from ..models.tags import get_tags

__all__ = ["ServingMixin"]



class ServingMixin:
    """New users for :class:`~segrec.route.composite.SegmentedRecommender` (mixed in; needs its fields)."""

    # ---------------------------------------------------------------- placement
    @property
    def attribute_names(self) -> list[str]:
        """Attributes a new-user request may carry (the fit users table's columns)."""
        return [] if self.segmenter_ is None else self.segmenter_.attribute_names

    @property
    def uses_attributes(self) -> bool:
        """Whether attributes can place a new user (the segmenter has an attribute block)."""
        return self.segmenter_ is not None and self.segmenter_.uses_attributes

    def check_attributes(self, attributes: dict[str, Any]) -> None:
        """Raise :class:`ConfigError` naming unknown attribute keys or non-numeric numeric values."""
        if self.segmenter_ is None:
            raise ConfigError(f"unknown attribute(s) {sorted(attributes)}; known: none (this system "
                              "has no segmenter)", key="attributes")
        self.segmenter_.check_attributes(attributes)

    def place(self, histories: list[np.ndarray], attributes: list[dict[str, Any] | None] | None = None):
        """Segment, confidence and evidence of each brand-new user.

        Args:
            histories: Dense item indices per user, oldest first (may be empty).
            attributes: Attribute dict per user (users-table columns), or None.

        Returns:
            ``(segments int64 (n,), confidence (n,) float or None entries, evidence (n,))``;
            segment -1 where nothing could place the user (no segmenter, no evidence).
        """
        n = len(histories)
        if self.segmenter_ is None:
            return (np.full(n, -1, np.int64), np.full(n, None, dtype=object), np.full(n, None, dtype=object))
        same = getattr(self, "_same_items", None)
        if same is None or same[0] is not self.segmenter_:  # checked once per segmenter
            same = (self.segmenter_, self.segmenter_.features.item_vocab_ == self.item_vocab_)
            self._same_items = same
        if same[1]:  # the segmenter indexes items as this model does: hand it the dense indices
            placed = self.segmenter_.place([np.asarray(h, np.int64) for h in histories], attributes,
                                           indexed=True)
        else:
            ids = [self.item_vocab_.ids[np.asarray(h, np.int64)].tolist() for h in histories]
            placed = self.segmenter_.place(ids, attributes)
        return placed.segments, placed.confidence, placed.evidence

    def segment_popularity(self, segment: int) -> np.ndarray:
        """Fit interactions per item among one segment's users, float32 (n_items,)."""
        members = np.flatnonzero(self.segments_ == int(segment))
        return np.asarray(self.seen_[members].sum(0), dtype=np.float32).ravel()

    # ------------------------------------------------------------------ scoring
    def score_new(self, histories: list[np.ndarray], segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores for brand-new users from a few items, through their segment's tier.

        Args:
            histories: Dense item indices per user, oldest first (may be empty).
            segments: Assigned segment per user (-1 = none: the default tier's users).

        Returns:
            ``(scores (n, n_items), served tier (n,))``: the new-user tier where it can
            score the user, else the fallback chain; a user nothing can score from
            items keeps a NaN row and tier ``""``.
        """
        segments = np.asarray(segments, dtype=np.int64)
        routed = np.array([self.new_user_tier(s) for s in segments], dtype=object)

        def score(tier: str, rows: np.ndarray) -> np.ndarray | None:
            model = self.tiers_.get(tier)
            if model is None or get_tags(model).history_input is None:
                return None
            return model.score_histories([histories[r] for r in rows], segments[rows])

        return self.chain().fill(routed, len(self.item_vocab_), score)

    def _score_histories(self, histories: list[list[int]], segments: np.ndarray | None) -> np.ndarray:
        # users without a given segment are placed by the segmenter from their items
        if segments is None:
            segments = self.place([np.asarray(h, np.int64) for h in histories])[0]
        return self.score_new([np.asarray(h, np.int64) for h in histories], segments)[0]

    # --------------------------------------------------------------------- cost
    def flops_per_user(self, users: np.ndarray) -> np.ndarray:
        """Analytic FLOPs of each dense user's request under the current routing and fallback."""
        users = np.asarray(users, dtype=np.int64)
        lengths = np.diff(self.seen_.indptr).astype(np.float64)[users]
        seg = self.segments_[users]

        def can(tier: str, rows: np.ndarray) -> np.ndarray:
            model = self.tiers_.get(tier)
            return np.zeros(len(rows), bool) if model is None else model.serves_segments(seg[rows])

        serving = self.chain().run(self.tier_of(users), can)
        out = np.full(len(users), np.nan, np.float64)
        for tier in dict.fromkeys(serving.tolist()):
            rows = np.flatnonzero(serving == tier)
            if tier in self.tiers_:
                out[rows] = self.tiers_[tier].flops_per_request(lengths[rows], segments=seg[rows])
        return out

    def flops_per_request(self, n_history=None, *, segments=None, new_user: bool = False):
        """Mean analytic FLOPs per request under the current routing (over fit users).

        Known users are costed as they are served (a cached tier: its vector product);
        ``new_user=True`` costs them as brand-new users of the same segments, through each
        segment's new-user tier from their items.

        Args:
            n_history: Ignored unless given: then the routed tiers' FLOPs at that
                history length, weighted by how many users each tier serves.
            segments: Not used (each fit user's own segment decides).
            new_user: Cost new users' requests instead of known users'.
        """
        users = np.flatnonzero(np.diff(self.seen_.indptr) > 0)
        if n_history is None and not new_user:
            return float(np.nanmean(self.flops_per_user(users)))
        if new_user:
            tiers = np.array([self.new_user_tier(s) for s in self.segments_[users]], dtype=object)
        else:
            tiers = self.tier_of(users)
        names, counts = np.unique(tiers, return_counts=True)
        lengths = np.diff(self.seen_.indptr).astype(np.float64)
        h = np.asarray(n_history, np.float64) if n_history is not None else None
        total = 0.0
        for t, c in zip(names, counts, strict=True):
            if t in self.tiers_:
                flops = self.tiers_[t].flops_per_request(
                    np.mean(lengths[users[tiers == t]]) if h is None else h, new_user=new_user)
                total = total + c / counts.sum() * np.asarray(flops)
        return total
