"""Small local models: one cheap recommender per segment, fitted on that segment's users."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from ..errors import SegrecError
from ..types import Interactions
from .base import ModelConfig, Recommender

__all__ = ["PerSegmentRecommender"]


class PerSegmentConfig(ModelConfig):
    """Settings of :class:`PerSegmentRecommender`."""

    base: str = "ease"
    """Saved name of the per-segment model class (``ease``, ``itemknn``, ``popularity``, ...)."""
    base_params: dict[str, Any] = Field(default_factory=dict)
    """Config overrides for each per-segment model."""
    min_segment_users: int = Field(20, ge=1)
    """Segments with fewer users get no local model (their users score NaN -> fallback)."""


class PerSegmentRecommender(Recommender):
    """One ``base`` model per segment, each fitted only on its segment's users.

    Users of a segment without a model (too small) score NaN, so a composite
    falls back to another tier for them (DESIGN.md: fallback chain).

    Attributes:
        segments_: int array of shape (n_users,), the segment of each dense user.
        models_: dict segment -> fitted Recommender.
    """

    Config = PerSegmentConfig
    name = "per_segment"
    segment_aware = True

    def _make_base(self) -> Recommender:
        from . import MODELS

        cls = MODELS.get(self.config.base)
        if cls is None:
            raise SegrecError(f"PerSegmentRecommender: unknown base model {self.config.base!r}; "
                              f"known: {sorted(MODELS)}")
        return cls(**self.config.base_params)

    def _fit(self, train: Interactions, valid: Interactions | None, *, segments=None, **_: Any) -> None:
        if segments is None:
            raise SegrecError("PerSegmentRecommender.fit needs segments= (one label per dense user)")
        labels = np.asarray(segments, dtype=np.int64)
        if labels.shape != (train.n_users,):
            raise SegrecError(f"segments must have one label per user ({train.n_users}); got {labels.shape}")
        self.segments_ = labels
        self.models_: dict[int, Recommender] = {}
        active = train.user_counts() > 0
        for seg in np.unique(labels[labels >= 0]):
            members = (labels == seg) & active
            if members.sum() < self.config.min_segment_users:
                continue
            sub_train = train.subset(members[train.users])
            sub_valid = None if valid is None else valid.subset(members[valid.users])
            self.models_[int(seg)] = self._make_base().fit(sub_train, valid=sub_valid)

    def _score(self, users: np.ndarray) -> np.ndarray:
        out = np.full((len(users), len(self.item_vocab_)), np.nan, dtype=np.float32)
        seg = self.segments_[users]
        for s, model in self.models_.items():
            rows = np.flatnonzero(seg == s)
            if len(rows):
                out[rows] = model._score(users[rows])
        return out

    def _state(self) -> dict[str, np.ndarray]:
        return {"segments": self.segments_}

    def _set_state(self, tensors, meta) -> None:
        self.segments_ = tensors["segments"]

    def _meta(self) -> dict[str, Any]:
        return {"segments_with_model": sorted(self.models_)}

    def _save_extra(self, directory: Path) -> None:
        for s, model in self.models_.items():
            sub = directory / f"segment_{s}"
            sub.mkdir()
            model.save_into(sub)

    def _load_extra(self, directory: Path) -> None:
        from ..io import read_json

        meta = read_json(directory / "model.json")["meta"]
        self.models_ = {int(s): Recommender.load(directory / f"segment_{s}")
                        for s in meta["segments_with_model"]}
