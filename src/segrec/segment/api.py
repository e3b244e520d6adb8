"""One call from interactions to a :class:`Segmentation`, and a fitted pipeline for new users.

Example:
    >>> from segrec.segment import SegmentationPipeline, segment_interactions
    >>> seg = segment_interactions(split.train, method="kmeans", n_segments="auto")  # doctest: +SKIP
    >>> seg.summary()["sizes"]  # doctest: +SKIP
    >>> pipe = SegmentationPipeline.build("gmm", n_segments=6).fit(split.train)  # doctest: +SKIP
    >>> pipe.assign_new(NewUsers(["new"], histories=[["50", "181"]]))  # doctest: +SKIP
    >>> pipe.place([["50", "181"]], [{"age": 25}]).segments  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np

from ..errors import DataWarning, MissingDependencyError, SegmentationError
from ..features import FeaturePipeline, FeaturesConfig, NewUsers, TextEmbedder, UserFeatures
from ..types import Interactions
from ._placement import ATTRIBUTE_ID_COLUMNS, NewUserPlacement, Placement
from .base import Segmentation, Segmenter, check_is_fitted, single_thread_below
from .gmm import GMMSegmenter
from .hierarchical import AgglomerativeSegmenter
from .kmeans import KMeansSegmenter
from .spectral import SpectralSegmenter
from .tiers import TierSegmenter
from .vae import VAESegmenter

__all__ = [
    "METHODS",
    "SEGMENTERS",
    "Placement",
    "SegmentationPipeline",
    "default_features",
    "make_segmenter",
    "segment_interactions",
]

log = logging.getLogger(__name__)

#: method name -> segmenter class; one explicit map, no string imports.
SEGMENTERS: dict[str, type[Segmenter]] = {
    "kmeans": KMeansSegmenter,
    "spectral": SpectralSegmenter,
    "agglomerative": AgglomerativeSegmenter,
    "gmm": GMMSegmenter,
    "vae": VAESegmenter,
    "tiers": TierSegmenter,
}
#: Methods accepted by :func:`segment_interactions` and the CLI.
METHODS = (*SEGMENTERS, "auto")
#: Methods tried by ``method="auto"`` (VAE and tiers are opt-in: slow / rule-based).
AUTO_METHODS = ("kmeans", "gmm", "agglomerative", "spectral")


def make_segmenter(method: str, **params: Any) -> Segmenter:
    """Build a segmenter by name: ``kmeans``, ``spectral``, ``agglomerative``, ``gmm``, ``vae``, ``tiers``."""
    cls = SEGMENTERS.get(method)
    if cls is None:
        raise SegmentationError(f"unknown segmentation method {method!r}; choose one of {list(METHODS)}")
    if cls is TierSegmenter:
        params.pop("n_segments", None)
        params = {k: v for k, v in params.items() if k in TierSegmenter.Config.model_fields}
    return cls(**params)


def _text_available() -> bool:
    try:
        from ..errors import require
        from ..features import default_model_path

        require("sentence_transformers", "text")
        default_model_path()
        return True
    except MissingDependencyError as exc:
        warnings.warn(f"text features skipped: {exc}", DataWarning, stacklevel=4)
        return False


def default_features(
    data: Interactions,
    *,
    text: bool = True,
    embedder: TextEmbedder | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> FeaturePipeline:
    """The default feature pipeline for ``data``.

    Behaviour, demographics (with a users table), the text profile (with an
    items table and ``text``; MiniLM when installed) and collaborative SVD.
    """
    blocks = ["behavior"]
    if data.user_table is not None:
        blocks.append("demographics")
    if text and data.item_table is not None and (embedder is not None or _text_available()):
        blocks.append("text")
    blocks.append("svd")
    return FeaturePipeline(FeaturesConfig(blocks=tuple(blocks)), embedder=embedder, cache_dir=cache_dir)


class SegmentationPipeline(NewUserPlacement):
    """Features + segmenter, fitted together; places brand-new users.

    Args:
        features: An unfitted :class:`FeaturePipeline`, or None for :func:`default_features`
            of the fit data.
        segmenter: An unfitted segmenter, or None with ``method="auto"`` to choose one.
        method_candidates: Segmenters tried when ``segmenter`` is None.
        criterion: How K / the method is chosen (see ``select_n_segments``).
        text: With ``features=None``: use the item-text block when available.
        embedder: With ``features=None``: the text encoder (None = MiniLM, offline).
        cache_dir: With ``features=None``: the item-embedding cache directory.

    Attributes:
        features_: The fitted users' :class:`UserFeatures` (not kept by ``save``).
        segmenter_: The fitted segmenter.
        segmentation_: Its :class:`Segmentation`.
        method_selection_: The method comparison when the method was chosen.
        attribute_names_: The fit users table's attribute columns (what a new user may carry).
    """

    def __init__(
        self,
        features: FeaturePipeline | None = None,
        segmenter: Segmenter | None = None,
        *,
        method_candidates: dict[str, Segmenter] | None = None,
        criterion: str = "silhouette",
        text: bool = True,
        embedder: TextEmbedder | None = None,
        cache_dir: str | os.PathLike | None = None,
    ):
        self.features = features
        self.segmenter = segmenter
        self.method_candidates = method_candidates
        self.criterion = criterion
        self.text, self.embedder, self.cache_dir = text, embedder, cache_dir
        self.segmentation_: Segmentation | None = None
        self.segmenter_: Segmenter | None = None

    def __repr__(self) -> str:
        what = (self.segmenter if self.segmenter is not None
                else f"auto {sorted(self.method_candidates or {})}")
        return f"SegmentationPipeline({what}, features={self.features!r})"

    def clone(self) -> SegmentationPipeline:
        """An unfitted copy with the same settings (default features are rebuilt at fit)."""
        features = None if self.features is None else FeaturePipeline(
            self.features.config, embedder=self.features.embedder, cache_dir=self.features.cache_dir)
        return SegmentationPipeline(
            features, None if self.segmenter is None else self.segmenter.with_params(),
            method_candidates=None if self.method_candidates is None else {
                k: v.with_params() for k, v in self.method_candidates.items()},
            criterion=self.criterion, text=self.text, embedder=self.embedder, cache_dir=self.cache_dir)

    @classmethod
    def build(
        cls,
        method: str = "kmeans",
        *,
        n_segments: int | Literal["auto"] = "auto",
        random_state: int = 0,
        features: FeaturePipeline | None = None,
        criterion: str = "silhouette",
        text: bool = True,
        embedder: TextEmbedder | None = None,
        cache_dir: str | os.PathLike | None = None,
        **params: Any,
    ) -> SegmentationPipeline:
        """A pipeline for a method name; ``features=None`` uses :func:`default_features` at fit time."""
        common = {"n_segments": n_segments, "random_state": random_state, **params}
        if method != "tiers" and criterion != "silhouette":
            common["k_criterion"] = criterion
        where = {"criterion": criterion, "text": text, "embedder": embedder, "cache_dir": cache_dir}
        if method == "auto":
            cands = {m: make_segmenter(m, **common) for m in AUTO_METHODS}
            return cls(features, None, method_candidates=cands, **where)
        return cls(features, make_segmenter(method, **common), **where)

    def fit(
        self,
        data: Interactions,
        *,
        text: bool | None = None,
        embedder: TextEmbedder | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> Self:
        """Fit features on ``data`` (fit data only) and segment its users; returns self.

        ``text``, ``embedder`` and ``cache_dir`` override the constructor's for this fit.
        """
        start = time.perf_counter()
        text = self.text if text is None else text
        embedder = self.embedder if embedder is None else embedder
        cache_dir = self.cache_dir if cache_dir is None else cache_dir
        if self.features is None:
            self.features = default_features(data, text=text, embedder=embedder, cache_dir=cache_dir)
        # the SVD and scaling are small dense work per user: one thread (see single_thread_below)
        with single_thread_below(data.n_users * 512):
            self.features_: UserFeatures = self.features.fit_transform(data)
        #: wall seconds of the two parts (the run's cost breakdown shows them)
        self.timings_ = {"features_s": time.perf_counter() - start}
        start = time.perf_counter()
        self.method_selection_ = None
        if self.segmenter is None:
            from .select_k import select_method

            cands = dict(self.method_candidates or {})
            if len(data.active_users()) > 10_000:  # spectral is quadratic-ish: not worth it here
                cands.pop("spectral", None)
            self.method_selection_ = select_method(self.features_, cands, criterion=self.criterion, data=data)
            self.segmenter_ = self.method_selection_.segmenters[self.method_selection_.best_method]
        else:
            self.segmenter_ = self.segmenter.fit(self.features_, data=data)
        seg = self.segmenter_.segmentation_
        if self.method_selection_ is not None:
            seg = seg.with_labels(
                seg.labels,
                extra={
                    "method_selection": self.method_selection_.table.replace({np.nan: None}).to_dict(
                        "records"
                    )
                },
            )
        self.segmentation_ = seg
        self.timings_["segmenter_s"] = time.perf_counter() - start
        table = data.user_table
        self.attribute_names_ = [] if table is None else [str(c) for c in table.columns
                                                           if c not in ATTRIBUTE_ID_COLUMNS]
        return self

    def assign(self, data: Interactions) -> np.ndarray:
        """Segments of the users of ``data`` (features rebuilt from it with the fitted pipeline)."""
        check_is_fitted(self.segmenter_)
        return self.segmenter_.assign(self.features.transform(data))

    def assign_new(self, new: NewUsers) -> np.ndarray:
        """Segments of brand-new users from their attributes and/or a few items."""
        check_is_fitted(self.segmenter_)
        return self.segmenter_.assign(self.features.transform_new(new))

    # ------------------------------------------------------------ artifacts
    def save_into(self, directory: str | os.PathLike) -> None:
        """Write the fitted pipeline (features and segmenter state) into an existing directory."""
        from ._persist import save_pipeline

        save_pipeline(self, Path(directory))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> SegmentationPipeline:
        """Read what :meth:`save_into` wrote; never unpickles."""
        from ._persist import load_pipeline

        return load_pipeline(Path(directory), SEGMENTERS, cls)


def segment_interactions(
    data: Interactions,
    *,
    method: str = "kmeans",
    n_segments: int | Literal["auto"] = "auto",
    text: bool = True,
    random_state: int = 0,
    embedder: TextEmbedder | None = None,
    cache_dir: str | os.PathLike | None = None,
    features: FeaturesConfig | None = None,
    criterion: str = "silhouette",
    **params: Any,
) -> Segmentation:
    """Segment the users of ``data`` in one call.

    Args:
        data: Fit interactions (with optional items/users tables).
        method: ``kmeans``, ``spectral``, ``agglomerative``, ``gmm``, ``vae``, ``tiers`` or ``auto``.
        n_segments: K, or ``"auto"``.
        text: Use the item-text profile block when an items table and the text
            encoder (or ``embedder``) are available.
        random_state: Seed.
        embedder: Text encoder (None = all-MiniLM-L6-v2, offline).
        cache_dir: Embedding cache directory.
        features: Explicit feature config (overrides the default blocks).
        criterion: How K (and the method) is chosen.
        **params: Extra segmenter settings (e.g. ``covariance_type`` for gmm).

    Returns:
        The fitted Segmentation (labels per dense user of ``data``).
    """
    pipe_features = (
        None if features is None else FeaturePipeline(features, embedder=embedder, cache_dir=cache_dir)
    )
    pipe = SegmentationPipeline.build(
        method,
        n_segments=n_segments,
        random_state=random_state,
        features=pipe_features,
        criterion=criterion,
        **params,
    )
    pipe.fit(data, text=text, embedder=embedder, cache_dir=cache_dir)
    return pipe.segmentation_
