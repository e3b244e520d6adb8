"""The :class:`Segmenter` base class (the :class:`Segmentation` value lives in ``segmentation.py``).

Every segmenter takes :class:`~segrec.features.UserFeatures` (or a plain
matrix), learns ``labels_`` (one int per row), ``centers_`` where they exist,
and places new rows with ``assign``. Labels are canonical: segment 0 is the
largest, ties broken by first appearance, so the same data and
``random_state`` always give the same numbering.

Example:
    >>> import numpy as np
    >>> from segrec.segment import KMeansSegmenter
    >>> x = np.r_[np.zeros((5, 2)), np.ones((3, 2))]
    >>> seg = KMeansSegmenter(n_segments=2, random_state=0).fit(x)
    >>> seg.labels_.tolist()
    [0, 0, 0, 0, 0, 1, 1, 1]
    >>> seg.assign(np.array([[0.9, 1.0]])).tolist()
    [1]
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from typing import Any, ClassVar, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from threadpoolctl import threadpool_limits

from ..errors import ConvergenceWarning, NotFittedError, SegmentationError
from ..features.base import UserFeatures
from ..types import Interactions
from ._arrays import _matrix, nearest_center, quality_metrics, segment_means
from .segmentation import Segmentation

__all__ = [
    "Segmentation",
    "Segmenter",
    "SegmenterConfig",
    "check_is_fitted",
    "nearest_center",
    "quality_metrics",
    "segment_means",
]

log = logging.getLogger(__name__)

KCriterion = Literal["silhouette", "davies_bouldin", "calinski_harabasz", "stability", "downstream"]


#: Feature matrices up to this many cells are segmented on one BLAS/OpenMP thread: thread
#: start-up and sync cost more than the math, and much more on a shared machine. Measured on
#: the 2-core box under load (22k users x 467 features, k-means with K from 2..10): one
#: thread 59 s wall / 12 s CPU, the default two 179 s / 59 s.
SINGLE_THREAD_MAX_CELLS = 50_000_000


def single_thread_below(cells: int):
    """``threadpool_limits(1)`` for problems up to :data:`SINGLE_THREAD_MAX_CELLS` cells."""
    return threadpool_limits(1) if cells <= SINGLE_THREAD_MAX_CELLS else contextlib.nullcontext()


def check_is_fitted(segmenter: Any) -> None:
    """Raise :class:`NotFittedError` unless ``segmenter`` has been fitted."""
    if getattr(segmenter, "labels_", None) is None:
        raise NotFittedError(
            f"This {type(segmenter).__name__} instance is not fitted yet; call fit(features) first."
        )


class SegmenterConfig(BaseModel):
    """Settings every segmenter shares."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_segments: int | Literal["auto"] = 8
    """Number of segments, or ``"auto"`` to choose it from ``k_candidates``."""
    random_state: int = 0
    """Seed; the same data and seed give the same segmentation."""
    k_candidates: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 9, 10)
    """Candidate K for ``n_segments="auto"``."""
    k_criterion: KCriterion = "silhouette"
    """How ``auto`` picks K; ``downstream`` needs ``fit(..., data=interactions)``."""
    quality_sample: int = Field(5000, ge=10)
    """Rows sampled for the quality metrics (silhouette is O(n^2))."""
    k_selection_sample: int = Field(10_000, ge=10)
    """Users the candidate K are fitted and scored on when K is chosen (a fixed random
    sample beyond this many; the chosen K is then fitted on everyone). Bounds the
    automatic K on 50k-user logs; ml-100k-sized data is used whole. Not applied with
    ``k_criterion="downstream"``, which needs every user's interactions."""

    @field_validator("n_segments")
    @classmethod
    def _check_k(cls, v):
        if v != "auto" and (not isinstance(v, int) or v < 1):
            raise ValueError(f'n_segments must be an int >= 1 or "auto"; got {v!r}')
        return v


class Segmenter:
    """Base class: ``fit(features) -> self``, ``labels_``, ``centers_``, ``assign``.

    Subclasses set ``Config`` and ``name`` and implement ``_fit_k(x, k, features)``
    (returning raw labels; it may set ``self.centers_`` in raw label order) and
    ``_assign_raw(x, features)``. The base class handles validation, ``auto`` K,
    canonical relabelling, quality metrics and the :class:`Segmentation` value.

    Attributes:
        labels_: int64 (n_users,), canonical segment per fitted row.
        centers_: float32 (n_segments, n_features) or None.
        n_segments_: The K in use (chosen when ``n_segments="auto"``).
        segmentation_: The fitted :class:`Segmentation`.
        k_selection_: The :class:`~segrec.segment.select_k.KSelection` when K was chosen.
    """

    Config: ClassVar[type[SegmenterConfig]] = SegmenterConfig
    name: ClassVar[str] = "base"
    #: Whether ``n_segments`` is chosen by the segmenter itself (tiers).
    fixed_k: ClassVar[bool] = False

    def __init__(self, config: SegmenterConfig | None = None, **overrides: Any):
        if config is not None and overrides:
            raise TypeError(f"{type(self).__name__}: pass a config or keyword overrides, not both")
        if config is None:
            config = self.Config(**overrides)
        elif not isinstance(config, self.Config):
            config = self.Config.model_validate(
                config.model_dump() if isinstance(config, BaseModel) else config
            )
        self.config = config
        self.labels_: np.ndarray | None = None
        self.centers_: np.ndarray | None = None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({args})"

    def with_params(self, **changes: Any) -> Self:
        """An unfitted copy with some config values changed (re-validated)."""
        return type(self)(self.Config.model_validate({**self.config.model_dump(), **changes}))

    # ------------------------------------------------------------------ fit
    def fit(self, features: UserFeatures | np.ndarray, *, data: Interactions | None = None) -> Self:
        """Segment the rows of ``features``; returns self.

        Args:
            features: User features (or a plain float matrix of shape (n, d)).
            data: Fit interactions of the same users; needed only by
                ``k_criterion="downstream"``.

        Raises:
            SegmentationError: K larger than the number of distinct rows, NaN features.
        """
        start = time.perf_counter()
        x = _matrix(features)
        self.labels_ = None
        self.centers_ = None
        self.k_selection_ = None
        with single_thread_below(x.size):
            self._fit_all(x, features, data)
        self.fit_seconds_ = time.perf_counter() - start
        with single_thread_below(x.size):
            self.segmentation_ = self._segmentation(x, features)
        log.info(
            "%s: %d segments of %d users in %.2fs (sizes %s)",
            self.name,
            self.n_segments_,
            len(x),
            self.fit_seconds_,
            self.segmentation_.sizes().tolist(),
        )
        return self

    def _fit_all(self, x: np.ndarray, features: UserFeatures | np.ndarray, data: Interactions | None) -> None:
        k = self.config.n_segments
        if k == "auto" and not self.fixed_k:
            from .select_k import select_n_segments

            sample = features
            cap = self.config.k_selection_sample
            if len(x) > cap and self.config.k_criterion != "downstream":
                from .select_k import _take

                rng = np.random.default_rng(self.config.random_state)
                sample = _take(features, np.sort(rng.choice(len(x), cap, replace=False)))
            self.k_selection_ = select_n_segments(
                self,
                sample,
                candidates=self.config.k_candidates,
                criterion=self.config.k_criterion,
                data=data if sample is features else None,
                random_state=self.config.random_state,
            )
            k = self.k_selection_.best_k
        elif k == "auto":
            k = 0
        if not self.fixed_k:
            self._check_k(x, int(k))
        raw = np.asarray(self._fit_k(x, int(k), features), dtype=np.int64)
        self._canonicalise(raw)
        self.n_segments_ = int(len(self.raw_labels_))
        if not self.fixed_k and self.n_segments_ < int(k):
            warnings.warn(
                f"{type(self).__name__} found {self.n_segments_} distinct segments, fewer than "
                f"n_segments={k}; possibly duplicate feature rows",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _check_k(self, x: np.ndarray, k: int) -> None:
        if k < 1:
            raise SegmentationError(
                f"The 'n_segments' parameter of {type(self).__name__} must be an int >= 1 "
                f'or "auto". Got {k} instead.'
            )
        if k > len(x):
            raise SegmentationError(
                f"{type(self).__name__}: n_segments={k} is larger than the number of users ({len(x)})"
            )
        if k * 50 <= len(x):  # with this many rows per segment, duplicates cannot matter
            return
        # distinct rows, counted on a random projection (collisions are vanishingly rare)
        proj = x.astype(np.float64) @ np.random.default_rng(12345).standard_normal(x.shape[1])
        n_distinct = len(np.unique(proj))
        if k > n_distinct:
            raise SegmentationError(
                f"{type(self).__name__}: n_segments={k} is larger than the number of "
                f"distinct users ({n_distinct} distinct feature rows of {len(x)})"
            )

    def _canonicalise(self, raw: np.ndarray) -> None:
        uniq, first, counts = np.unique(raw, return_index=True, return_counts=True)
        order = np.lexsort((first, -counts))  # biggest first, ties by first appearance
        label_map = np.full(int(uniq.max()) + 1 if len(uniq) else 0, -1, np.int64)
        label_map[uniq[order]] = np.arange(len(uniq))
        self.label_map_ = label_map
        self.raw_labels_ = uniq[order]  # public label -> raw label
        self.labels_ = label_map[raw]
        if self.centers_ is not None:
            self.centers_ = np.asarray(self.centers_, dtype=np.float32)[self.raw_labels_]

    def _segmentation(self, x: np.ndarray, features: UserFeatures | np.ndarray) -> Segmentation:
        metrics = quality_metrics(
            x, self.labels_, sample_size=self.config.quality_sample, random_state=self.config.random_state
        )
        extra: dict[str, Any] = {"fit_seconds": round(self.fit_seconds_, 4)}
        if self.k_selection_ is not None:
            extra["k_selection"] = self.k_selection_.to_dict()
        ids = features.user_vocab.ids if isinstance(features, UserFeatures) else None
        return Segmentation(
            self.labels_,
            self.n_segments_,
            self.name,
            self.centers_,
            metrics,
            self._names(),
            ids,
            self.config.model_dump(mode="json"),
            extra,
        )

    def _names(self) -> tuple[str, ...] | None:
        return None

    def assign(self, features: UserFeatures | np.ndarray) -> np.ndarray:
        """Segment of each row of new features (same pipeline), int64 array of shape (n,)."""
        check_is_fitted(self)
        raw = np.asarray(self._assign_raw(_matrix(features), features), dtype=np.int64)
        return self.label_map_[raw]

    def membership(self, features: UserFeatures | np.ndarray) -> np.ndarray | None:
        """Membership probabilities (n, n_segments) where the segmenter has a model of them, else None.

        Only probabilistic segmenters (GMM) have them; a new user's placement reports
        the probability of their segment as its confidence.
        """
        check_is_fitted(self)
        return None

    #: learned attributes a subclass saves as arrays itself (``_extra_state``), e.g. a scikit-learn
    #: model; the rest of the fitted state is saved generically (:mod:`segrec.segment._persist`)
    own_state: ClassVar[tuple[str, ...]] = ()

    def _extra_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays and JSON for the attributes in :attr:`own_state`; none by default."""
        return {}, {}

    def _restore_extra(self, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Rebuild what :meth:`_extra_state` saved."""

    def fit_assign(self, features: UserFeatures | np.ndarray) -> np.ndarray:
        """``fit(features).labels_``."""
        return self.fit(features).labels_

    # --------------------------------------------------------------- hooks
    def _fit_k(self, x: np.ndarray, k: int, features: UserFeatures | np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _assign_raw(self, x: np.ndarray, features: UserFeatures | np.ndarray) -> np.ndarray:
        if self.centers_ is None:
            raise NotImplementedError
        # centres are stored in public order; map back to raw labels for label_map_
        return self.raw_labels_[nearest_center(x, self.centers_)]
