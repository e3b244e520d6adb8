"""SegmentedRecommender: a segmentation + model tiers + a router + a fallback chain.

Every user belongs to a segment; each segment is routed to one *tier* (e.g. the
segment-adapted Transformer, the global Transformer, a per-segment local EASE,
popularity). Tiers are ordinary Recommenders that can score any user; a tier
that cannot score a user returns NaN, and the fallback chain (``global`` then
``popularity`` by default) takes over, so no user goes without a list.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from ..errors import SegrecError
from ..evaluate.metrics import ndcg
from ..evaluate.ranking import hit_matrix, rank_in_chunks
from ..io import read_json, read_table, write_table
from ..route.policy import choose_accuracy
from ..types import Interactions
from .base import ModelConfig, Recommender

__all__ = ["SegmentedRecommender", "validation_table"]

log = logging.getLogger(__name__)


class SegmentedConfig(ModelConfig):
    """Settings of :class:`SegmentedRecommender`."""

    fallback: tuple[str, ...] = ("global", "popularity")
    """Tiers tried, in order, for users their routed tier cannot score."""
    min_gain: float = Field(0.0, ge=0.0)
    """A tier must beat the default tier by more than this validation NDCG@10 to be routed to."""
    default_tier: str = "global"
    """Tier kept for a segment when no other tier beats it (and for unsegmented users)."""


def _fit_params(model: Recommender, segments: np.ndarray, fitted: dict[str, Recommender]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if getattr(model, "segment_aware", False):
        params["segments"] = segments
    if getattr(model, "needs_global", False) and "global" in fitted:
        params["global_model"] = fitted["global"]
    return params


def validation_table(
    models: dict[str, Recommender], train: Interactions, valid: Interactions, segments: np.ndarray
) -> pd.DataFrame:
    """Per-segment validation NDCG@10 of each fitted model (fitted on ``train`` only).

    Returns:
        Rows ``segment, tier, users, ndcg@10``; NaN where a tier scores no user of
        the segment (e.g. a segment too small for a local model).
    """
    train_csr, valid_csr = train.to_csr(), valid.to_csr()
    n_valid = np.diff(valid_csr.indptr)
    users = np.flatnonzero(n_valid > 0)
    rows = []
    for tier, model in models.items():
        top, vals = rank_in_chunks(model.score_dense, users, 10, seen=train_csr)
        # a tier that cannot score a user (NaN row) gives an empty list: leave it out
        scores_nan = ~np.isfinite(vals[:, 0])
        per_user = ndcg(hit_matrix(top, valid_csr, users), n_valid[users], 10)
        seg = segments[users]
        for s in np.unique(seg):
            m = (seg == s) & ~scores_nan
            rows.append({"segment": int(s), "tier": tier, "users": int((seg == s).sum()),
                         "ndcg@10": float(per_user[m].mean()) if m.any() else np.nan})
    return pd.DataFrame(rows)


class SegmentedRecommender(Recommender):
    """Routes each segment to the model tier that pays off on validation.

    Args:
        tiers: tier name -> unfitted Recommender. Names used by the defaults:
            ``global`` (the large model), ``popularity`` (last resort).
        config: :class:`SegmentedConfig` (or keyword overrides).
        routing: Optional fixed segment -> tier map; if omitted it is chosen by
            validation NDCG@10 per segment (the ``accuracy`` policy).

    Attributes:
        segments_: int array (n_users,), segment of each dense user (-1 = none).
        routing_: dict segment -> tier.
        tiers_: dict tier -> fitted Recommender.
        validation_: per-segment validation table behind the routing (or None).
    """

    Config = SegmentedConfig
    name = "segmented"
    segment_aware = True

    def __init__(self, tiers: dict[str, Recommender] | None = None, config: SegmentedConfig | None = None,
                 *, routing: dict[int, str] | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.tiers = dict(tiers or {})
        self.routing = routing

    def with_params(self, **changes: Any) -> SegmentedRecommender:
        """An unfitted copy with config changes; tiers are copied unfitted."""
        cfg = self.Config.model_validate({**self.config.model_dump(), **changes})
        return SegmentedRecommender({k: m.with_params() for k, m in self.tiers.items()}, cfg,
                                    routing=self.routing)

    def _fit(self, train: Interactions, valid: Interactions | None, *, segments=None,
             prefitted: dict[str, Recommender] | None = None, **_: Any) -> None:
        if segments is None:
            raise SegrecError("SegmentedRecommender.fit needs segments= (one label per dense user)")
        segments = np.asarray(segments, dtype=np.int64)
        if segments.shape != (train.n_users,):
            raise SegrecError(f"segments must have one label per user ({train.n_users}); got {segments.shape}")
        for needed in (self.config.default_tier, *self.config.fallback):
            if needed not in self.tiers and needed not in (prefitted or {}):
                raise SegrecError(f"SegmentedRecommender: tier {needed!r} is required by the config "
                                  f"but not given; tiers: {sorted(self.tiers)}")
        self.segments_ = segments
        self.validation_ = None
        routing = self.routing
        if routing is None:
            if valid is None:
                raise SegrecError("SegmentedRecommender chooses its routing on validation data: "
                                  "pass valid= or a fixed routing=")
            # Stage 1: every tier fitted on train only, scored on valid, per segment.
            stage: dict[str, Recommender] = {}
            for name, proto in self.tiers.items():
                m = proto.with_params()
                stage[name] = m.fit(train, **_fit_params(m, segments, stage))
            self.validation_ = validation_table(stage, train, valid, segments)
            routing = choose_accuracy(self.validation_, min_gain=self.config.min_gain,
                                      default=self.config.default_tier)
        self.routing_ = {int(k): str(v) for k, v in routing.items()}
        # Stage 2: the final tiers, fitted on train with valid (-> train ∪ valid).
        self.tiers_: dict[str, Recommender] = dict(prefitted or {})
        for name, proto in self.tiers.items():
            if name in self.tiers_:
                continue
            m = proto.with_params()
            self.tiers_[name] = m.fit(train, valid=valid, **_fit_params(m, segments, self.tiers_))

    def tier_of(self, users: np.ndarray) -> np.ndarray:
        """The routed tier name per dense user."""
        seg = self.segments_[users]
        return np.array([self.routing_.get(int(s), self.config.default_tier) for s in seg], dtype=object)

    def _score(self, users: np.ndarray) -> np.ndarray:
        out = np.full((len(users), len(self.item_vocab_)), np.nan, dtype=np.float32)
        todo = np.ones(len(users), dtype=bool)
        tiers = self.tier_of(users)

        def fill(rows: np.ndarray, tier: str) -> None:
            if not len(rows) or tier not in self.tiers_:
                return
            scores = np.asarray(self.tiers_[tier].score_dense(users[rows]), dtype=np.float32)
            ok = np.isfinite(scores).any(1)
            out[rows[ok]] = scores[ok]
            todo[rows[ok]] = False

        for tier in dict.fromkeys(tiers.tolist()):  # each user's routed tier first
            fill(np.flatnonzero(tiers == tier), tier)
        for tier in self.config.fallback:  # then the chain, for whoever is left
            fill(np.flatnonzero(todo), tier)
        return out

    def recommend(self, user_ids, k: int = 10, *, exclude_seen: bool = True):
        """Top-k per user, with the segment and the tier that served each user."""
        recs = super().recommend(user_ids, k, exclude_seen=exclude_seen)
        users = self._user_index(recs.user_ids)
        return type(recs)(recs.user_ids, recs.item_ids, recs.scores, self.segments_[users], self.tier_of(users))

    # ------------------------------------------------------------ artifacts
    def _state(self) -> dict[str, np.ndarray]:
        return {"segments": self.segments_}

    def _set_state(self, tensors, meta) -> None:
        self.segments_ = tensors["segments"]
        self.routing_ = {int(k): v for k, v in meta["routing"].items()}

    def _meta(self) -> dict[str, Any]:
        return {"routing": {str(k): v for k, v in self.routing_.items()}, "tiers": sorted(self.tiers_)}

    def _save_extra(self, directory: Path) -> None:
        for name, model in self.tiers_.items():
            sub = directory / "tiers" / name
            sub.mkdir(parents=True)
            model.save_into(sub)
        if self.validation_ is not None:
            write_table(directory / "validation.parquet", self.validation_)

    def _load_extra(self, directory: Path) -> None:
        meta = read_json(directory / "model.json")["meta"]
        self.tiers_ = {name: Recommender.load(directory / "tiers" / name) for name in meta["tiers"]}
        self.tiers = {}
        self.routing = None
        val = directory / "validation.parquet"
        self.validation_ = read_table(val) if val.exists() else None
