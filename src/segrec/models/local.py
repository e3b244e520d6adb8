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
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ..distributed.executor import Executor, LocalExecutor, TaskFailure, raise_if_all_failed
from ..errors import SegrecError
from ..types import Interactions, Vocabulary
from .base import ModelConfig, Recommender

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
    segment_aware = True
    #: ``fit`` takes ``executor=`` (per-segment fits as independent tasks)
    uses_executor = True

    def _make_base(self) -> Recommender:
        return _build_base(self.config)

    def _fit(self, train: Interactions, valid: Interactions | None, *, segments=None,
             executor: Executor | None = None, **_: Any) -> None:
        if segments is None:
            raise SegrecError("PerSegmentRecommender.fit needs segments= (one label per dense user)")
        labels = np.asarray(segments, dtype=np.int64)
        if labels.shape != (train.n_users,):
            raise SegrecError(f"segments must have one label per user ({train.n_users}); got {labels.shape}")
        _build_base(self.config)  # a bad base/base_params is a config error: fail now, not per segment
        self.segments_ = labels
        self.models_: dict[int, Recommender] = {}
        self.failed_segments_: dict[int, str] = {}
        active = train.user_counts() > 0
        todo = [int(s) for s in np.unique(labels[labels >= 0])
                if ((labels == s) & active).sum() >= self.config.min_segment_users]
        executor = executor or LocalExecutor()
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
    from . import MODELS

    cls = MODELS.get(config.base)
    if cls is None:
        raise SegrecError(f"PerSegmentRecommender: unknown base model {config.base!r}; "
                          f"known: {sorted(MODELS)}")
    return cls(**config.base_params)


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

    def _make_inner(self) -> Recommender:
        from . import MODELS

        if self.config.base not in RESTRICTABLE:
            raise SegrecError(f"ItemSubsetRecommender: base {self.config.base!r} cannot be restricted to "
                              f"touched items exactly; use one of {sorted(RESTRICTABLE)}")
        return MODELS[self.config.base](**self.config.base_params)

    def _fit(self, train: Interactions, valid: Interactions | None, **_: Any) -> None:
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
        return self.score_histories(self.seen_[users])

    def score_histories(self, rows) -> np.ndarray:
        """Scores (n, n_items) for sparse catalogue rows; items outside the sub-catalogue score 0."""
        local = self.inner_.score_histories(self._local_rows(rows))
        out = np.zeros((local.shape[0], len(self.item_vocab_)), np.float32)
        out[:, self.item_index_] = local
        return out

    def flops_per_request(self, n_history=None):
        """The base's FLOPs on the sub-catalogue, ranked over the whole catalogue."""
        from ..evaluate.cost import _h

        h = _h(self, n_history)
        return self.inner_.flops_per_request(h) + float(len(self.item_vocab_) - len(self.item_index_))

    # -------------------------------------------------------------- artifacts
    def _state(self) -> dict[str, np.ndarray]:
        return {"item_index": self.item_index_,
                **{f"inner.{k}": v for k, v in self.inner_._state().items()}}

    def _set_state(self, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.item_index_ = np.asarray(tensors["item_index"], np.int64)
        inner = self._make_inner()
        inner.user_vocab_ = self.user_vocab_
        inner.item_vocab_ = Vocabulary(self.item_vocab_.ids[self.item_index_])
        inner.seen_ = self._local_rows(self.seen_)
        inner._set_state({k[len("inner."):]: v for k, v in tensors.items() if k.startswith("inner.")},
                         meta.get("inner", {}))
        self.inner_ = inner
        self.items_dropped_ = int(meta.get("items_dropped", 0))

    def _meta(self) -> dict[str, Any]:
        return {"inner": self.inner_._meta(), "items_dropped": getattr(self, "items_dropped_", 0)}
