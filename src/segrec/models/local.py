"""Small local models: one cheap recommender per segment, fitted on that segment's users.

The per-segment fits are independent, so they run through an executor
(:mod:`segrec.distributed`): one after another here by default, or as Ray tasks.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from ..distributed.executor import LocalExecutor, TaskFailure, raise_if_all_failed
from ..errors import SegrecError
from ..types import Interactions
from .base import ModelConfig, Recommender, registered_models
from .context import FitContext
from .tags import RecommenderTags

__all__ = ["PerSegmentRecommender"]

log = logging.getLogger(__name__)


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

    Users of a segment without a model (too small, or its fit failed on every
    attempt) score NaN, so a composite falls back to another tier for them
    (DESIGN.md: fallback chain; in ``segrec run`` the global model).

    Attributes:
        segments_: int array of shape (n_users,), the segment of each dense user.
        models_: dict segment -> fitted Recommender.
        failed_segments_: dict segment -> why its fit failed (after the executor's retries).
    """

    Config = PerSegmentConfig
    name = "per_segment"

    def __init__(self, config: PerSegmentConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.segments_: np.ndarray | None = None
        self.models_: dict[int, Recommender] | None = None

    def __recommender_tags__(self) -> RecommenderTags:
        """Needs the segments; new users are scored by their segment's model from item rows."""
        return replace(super().__recommender_tags__(), requires_segments=True)

    def _make_base(self) -> Recommender:
        return _build_base(self.config)

    def _fit(self, train: Interactions, valid: Interactions | None, context: FitContext) -> None:
        labels = np.array(context.segments, dtype=np.int64)
        _build_base(self.config)  # a bad base/base_params is a config error: fail now, not per segment
        self.segments_ = labels
        self.models_: dict[int, Recommender] = {}
        self.failed_segments_: dict[int, str] = {}
        active = train.user_counts() > 0
        todo = [int(s) for s in np.unique(labels[labels >= 0])
                if ((labels == s) & active).sum() >= self.config.min_segment_users]
        executor = context.executor or LocalExecutor()
        # the data goes to the executor once (Ray: one ray.put); each task cuts its segment out
        results = executor.map(fit_segment_model, todo, shared=(self.config, train, valid, labels),
                               labels=[f"{self.name} segment {s}" for s in todo], on_error="return")
        raise_if_all_failed(results, f"{type(self).__name__}({self.config.base})")
        for seg, res in zip(todo, results, strict=True):
            if isinstance(res, TaskFailure):
                self.failed_segments_[seg] = str(res)
                log.warning("segment %d has no %s model (its users fall back): %s", seg,
                            self.config.base, res)
            else:
                self.models_[seg] = res

    def _score(self, users: np.ndarray) -> np.ndarray:
        out = np.full((len(users), len(self.item_vocab_)), np.nan, dtype=np.float32)
        seg = self.segments_[users]
        for s, model in self.models_.items():
            rows = np.flatnonzero(seg == s)
            if len(rows):
                out[rows] = model._score(users[rows])
        return out

    def sub_models(self) -> list[Recommender]:
        """The per-segment models."""
        return list(self.models_.values())

    def serves_segments(self, segments: np.ndarray) -> np.ndarray:
        """True for segments that have a model."""
        return np.isin(np.asarray(segments, np.int64), list(self.models_))

    def score_one(self, user: int) -> np.ndarray:
        """One user's scores from their segment's model (its fast path), NaN without one."""
        sub = self.models_.get(int(self.segments_[int(user)]))
        if sub is None:
            return np.full(len(self.item_vocab_), np.nan, dtype=np.float32)
        return sub.score_one(user)

    def _score_histories(self, rows, segments: np.ndarray | None) -> np.ndarray:
        # each user through their segment's model; no segment or no model: a NaN row
        n = rows.shape[0]
        out = np.full((n, len(self.item_vocab_)), np.nan, dtype=np.float32)
        segs = np.full(n, -1, np.int64) if segments is None else segments
        for s in np.unique(segs):
            sub = self.models_.get(int(s))
            if sub is not None:
                pick = np.flatnonzero(segs == s)
                out[pick] = sub.score_histories(rows[pick], segs[pick])
        return out

    def _score_flops(self, h: np.ndarray, segments) -> np.ndarray:
        subs = self.models_
        if segments is None:
            # a request is served by one segment's model; they share the catalogue: their mean
            if not subs:
                return np.zeros_like(h)
            return np.mean([m.flops_per_request(h) - m.n_items for m in subs.values()], axis=0)
        segs = np.broadcast_to(np.asarray(segments, np.int64), h.shape)
        out = np.full(h.shape, np.nan)
        for s in np.unique(segs):
            if int(s) in subs:
                pick = segs == s
                out[pick] = subs[int(s)]._score_flops(h[pick], None)
        return out

    def _state(self) -> dict[str, np.ndarray]:
        return {"segments": self.segments_}

    def _set_state(self, tensors, meta) -> None:
        self.segments_ = tensors["segments"]

    def _meta(self) -> dict[str, Any]:
        return {"segments_with_model": sorted(self.models_),
                "failed_segments": {str(k): v for k, v in getattr(self, "failed_segments_", {}).items()}}

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
        self.failed_segments_ = {int(k): v for k, v in meta.get("failed_segments", {}).items()}


def _build_base(config: PerSegmentConfig) -> Recommender:
    known = registered_models()
    if config.base not in known:
        raise SegrecError(f"PerSegmentRecommender: unknown base model {config.base!r}; "
                          f"known: {sorted(known)}")
    return known[config.base](**config.base_params)


def fit_segment_model(shared: tuple, segment: int) -> Recommender:
    """Fit one segment's model: the task :class:`PerSegmentRecommender` hands to its executor.

    A pure function of (config, data, labels) and the segment, so it runs the same in
    this process and as a Ray task.

    Args:
        shared: ``(config, train, valid, labels)``: the PerSegmentConfig, the full fit
            interactions, the optional held-out tail, and the segment of each dense user.
        segment: The segment to fit.

    Returns:
        The segment's fitted base model (trained on its users' rows only).
    """
    config, train, valid, labels = shared
    members = (labels == segment) & (train.user_counts() > 0)
    sub_train = train.subset(members[train.users])
    sub_valid = None if valid is None else valid.subset(members[valid.users])
    return _build_base(config).fit(sub_train, valid=sub_valid)
