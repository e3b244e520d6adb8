"""Small local models: one cheap recommender per segment, fitted on that segment's users.

The per-segment fits are independent, so they run through an executor
(:mod:`segrec.distributed`): one after another here by default, or as Ray tasks.

A segment's users rarely touch the whole catalogue, and an item nobody in the segment
touched has an all-zero row and column in an item-item model fitted on the segment
(EASE, ItemKNN) and a zero count (popularity). So such a segment's model is fitted on
the items its users touched only (:class:`ItemSubsetRecommender`) and mapped back to
the full catalogue for scoring, with those zeros: the same scores for the same
settings, while memory and save size follow the segment's own items (K segments no
longer hold K full n_items^2 matrices).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ..distributed.executor import LocalExecutor, TaskFailure, raise_if_all_failed
from ..errors import SegrecError
from ..types import Interactions, Vocabulary
from .base import ModelConfig, Recommender, registered_models
from .context import FitContext
from .tags import RecommenderTags

__all__ = ["ItemSubsetRecommender", "PerSegmentRecommender"]

#: Base models for which an untouched item's score is exactly 0, so fitting them on the
#: touched items only and scoring the others 0 is the same model.
RESTRICTABLE = frozenset({"ease", "itemknn", "popularity"})

log = logging.getLogger(__name__)


class PerSegmentConfig(ModelConfig):
    """Settings of :class:`PerSegmentRecommender`."""

    base: str = "ease"
    """Saved name of the per-segment model class (``ease``, ``itemknn``, ``popularity``, ...)."""
    base_params: dict[str, Any] = Field(default_factory=dict)
    """Config overrides for each per-segment model."""
    min_segment_users: int = Field(20, ge=1)
    """Segments with fewer users get no local model (their users score NaN -> fallback)."""
    restrict_items: bool = True
    """Fit an item-item base (``ease``, ``itemknn``, ``popularity``) of a segment on only the
    items its users touched (:class:`ItemSubsetRecommender`): same scores, memory and save
    size of the segment's own items."""
    max_segment_items: int | None = Field(8192, ge=2)
    """With ``restrict_items``, a segment whose users touched more items keeps its this many
    most-interacted ones (the rest score 0 in its model, as untouched items do), so one local
    model holds at most 8192^2 float32 weights (256 MB). None = no cap. ml-100k,
    amazon-scientific and the e-commerce shape (<= 6.3k items a segment) are below it; on the
    micro-video shape (19k items, K=7) it cut the local EASE weights from 2.6 GB to 1.5 GB."""


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
    if config.restrict_items and config.base in RESTRICTABLE:
        touched = np.unique(np.concatenate([sub_train.items, [] if sub_valid is None else sub_valid.items]))
        cap = config.max_segment_items
        if len(touched) < train.n_items or (cap is not None and len(touched) > cap):
            return ItemSubsetRecommender(base=config.base, base_params=config.base_params,
                                         max_items=cap).fit(sub_train, valid=sub_valid)
    return _build_base(config).fit(sub_train, valid=sub_valid)


class ItemSubsetConfig(ModelConfig):
    """Settings of :class:`ItemSubsetRecommender`."""

    base: str = "ease"
    """Saved name of the model fitted on the sub-catalogue (one of :data:`RESTRICTABLE`)."""
    base_params: dict[str, Any] = Field(default_factory=dict)
    """Config overrides of that model."""
    max_items: int | None = Field(None, ge=2)
    """Keep at most this many items: the most-interacted in the fit data (ties to the lower
    id); interactions with the others are left out and those items score 0. None = every
    touched item (then the model equals ``base`` fitted on the full catalogue)."""


class ItemSubsetRecommender(Recommender):
    """A ``base`` model fitted on the items its data touches, scored over the whole catalogue.

    Untouched items score 0, exactly what the item-item bases of :data:`RESTRICTABLE`
    give them when fitted on the full catalogue (all-zero rows and columns), so the
    model is the same while its weights are (touched x touched). Per-segment models use
    it (:class:`PerSegmentRecommender`); fitted alone it behaves like ``base``.

    With ``max_items`` only the most-interacted items are kept (an approximation, for
    bounded memory); ``items_dropped_`` says how many touched items were left out.

    Attributes:
        item_index_: int64 (n_sub,), the dense catalogue ids of the kept items, sorted.
        items_dropped_: Touched items left out by ``max_items`` (0 without a cap).
        inner_: The ``base`` model over the sub-catalogue (same users).
    """

    Config = ItemSubsetConfig
    name = "item_subset"

    def __recommender_tags__(self) -> RecommenderTags:
        """New users are scored from item rows like the base; popularity needs no history."""
        return replace(super().__recommender_tags__(), needs_history=self.config.base != "popularity")

    def _make_inner(self) -> Recommender:
        if self.config.base not in RESTRICTABLE:
            raise SegrecError(f"ItemSubsetRecommender: base {self.config.base!r} cannot be restricted to "
                              f"touched items exactly; use one of {sorted(RESTRICTABLE)}")
        return registered_models()[self.config.base](**self.config.base_params)

    def _fit(self, train: Interactions, valid: Interactions | None, context: FitContext) -> None:
        inner = self._make_inner()
        parts = [train] if valid is None else [train, valid]
        every = np.concatenate([p.items for p in parts])
        counts = np.bincount(every, minlength=train.n_items)
        touched = np.flatnonzero(counts)
        cap = self.config.max_items
        if cap is not None and len(touched) > cap:
            keep = touched[np.argsort(-counts[touched], kind="stable")[:cap]]
            log.info("%s: %d of %d touched items kept (max_items)", self.config.base, cap, len(touched))
            self.items_dropped_ = int(len(touched) - cap)
            touched = np.sort(keep)
            member = np.zeros(train.n_items, bool)
            member[touched] = True
            train = train.subset(member[train.items])
            valid = None if valid is None else valid.subset(member[valid.items])
        else:
            self.items_dropped_ = 0
        self.item_index_ = touched.astype(np.int64)
        vocab = Vocabulary(train.item_vocab.ids[self.item_index_])
        local_train, local_valid = (None if p is None else self._restrict(p, vocab) for p in (train, valid))
        self.inner_ = inner.fit(local_train, valid=local_valid)
        self.fit_timings_.update(self.inner_.fit_timings_)

    def _restrict(self, data: Interactions, vocab: Vocabulary) -> Interactions:
        """The same rows with item ids of the sub-catalogue (every item of ``data`` is in it)."""
        return Interactions.from_arrays(
            data.users, np.searchsorted(self.item_index_, data.items), ratings=data.ratings,
            timestamps=data.timestamps, user_vocab=data.user_vocab, item_vocab=vocab, source=data.source)

    def _local_rows(self, rows) -> sp.csr_matrix:
        """Sparse catalogue rows -> rows over the sub-catalogue (untouched items dropped)."""
        rows = sp.csr_matrix(rows, dtype=np.float32)
        local_of = np.full(rows.shape[1], -1, np.int64)
        local_of[self.item_index_] = np.arange(len(self.item_index_))
        pos = local_of[rows.indices]
        keep = pos >= 0
        row_ids = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))[keep]
        indptr = np.r_[0, np.cumsum(np.bincount(row_ids, minlength=rows.shape[0]))]
        return sp.csr_matrix((rows.data[keep], pos[keep], indptr),
                             shape=(rows.shape[0], len(self.item_index_)))

    def _score(self, users: np.ndarray) -> np.ndarray:
        return self._score_histories(self.seen_[users], None)

    def _score_histories(self, rows, segments) -> np.ndarray:
        # (n, n_items) for sparse catalogue rows; items outside the sub-catalogue score 0
        local = self.inner_._score_histories(self._local_rows(rows), None)
        out = np.zeros((local.shape[0], len(self.item_vocab_)), np.float32)
        out[:, self.item_index_] = local
        return out

    def score_one(self, user: int) -> np.ndarray:
        """The base's single-user path on the sub-catalogue (same users), mapped back."""
        out = np.zeros(len(self.item_vocab_), np.float32)
        out[self.item_index_] = self.inner_.score_one(user)
        return out

    def _score_flops(self, h: np.ndarray, segments) -> np.ndarray:
        # the base's scoring on the sub-catalogue; ranking over the whole one is added by the caller
        return self.inner_._score_flops(h, None)

    def sub_models(self) -> list[Recommender]:
        """The base model over the sub-catalogue (saved in ``inner/``)."""
        return [self.inner_]

    def _add_interactions(self, users: np.ndarray, items: np.ndarray, done: set[int]) -> None:
        # The base indexes the sub-catalogue: catalogue ids are mapped, and interactions with
        # items outside it are left out, as the fit left them out. Called even when none is
        # left, so the base is marked done and the generic sub-model pass (catalogue ids) skips it.
        local_of = np.full(len(self.item_vocab_), -1, np.int64)
        local_of[self.item_index_] = np.arange(len(self.item_index_))
        local = local_of[items]
        keep = local >= 0
        self.inner_.add_interactions(users[keep], local[keep], done=done)

    # -------------------------------------------------------------- artifacts
    def _state(self) -> dict[str, np.ndarray]:
        return {"item_index": self.item_index_}

    def _set_state(self, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        from ._checks import check_array

        index = check_array("item_subset", "state.item_index", tensors.get("item_index"), kind="iu",
                            ndim=1, low=0, high=max(len(self.item_vocab_), 1))
        if (np.diff(index) <= 0).any():
            raise SegrecError("item_subset: tensor 'state.item_index' is not strictly increasing; "
                              "the artifact is corrupt")
        self.item_index_ = index.astype(np.int64)
        self.items_dropped_ = int(meta.get("items_dropped", 0))

    def _meta(self) -> dict[str, Any]:
        return {"items_dropped": getattr(self, "items_dropped_", 0)}

    def _save_extra(self, directory: Path) -> None:
        (directory / "inner").mkdir()
        self.inner_.save_into(directory / "inner")

    def _load_extra(self, directory: Path) -> None:
        inner = Recommender.load(directory / "inner")
        if inner.name != self.config.base or inner.n_items != len(self.item_index_) or \
                len(inner.user_vocab_) != len(self.user_vocab_):
            raise SegrecError(f"{directory / 'inner'}: holds a {inner.name} over {inner.n_items} items, "
                              f"expected {self.config.base} over {len(self.item_index_)}; the artifact "
                              "is corrupt")
        self.inner_ = inner
