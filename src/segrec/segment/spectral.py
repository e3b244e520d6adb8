"""Spectral segmentation over a k-nearest-neighbour graph (scikit-learn).

Finds non-convex groups that k-means splits wrongly. It is O(n^2)-ish, so above
``max_fit_users`` it fits on a random sample and places everyone else at the
nearest segment mean (an :class:`~segrec.errors.EfficiencyWarning` says so);
``assign`` also uses the nearest segment mean.

Example:
    >>> seg = SpectralSegmenter(n_segments=4, n_neighbors=15, random_state=0)
    >>> seg.fit(features).labels_  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from pydantic import Field

from ..errors import EfficiencyWarning
from .base import Segmenter, SegmenterConfig, nearest_center, segment_means

__all__ = ["SpectralConfig", "SpectralSegmenter", "fit_on_sample"]


class SpectralConfig(SegmenterConfig):
    """Settings of :class:`SpectralSegmenter`."""

    n_neighbors: int = Field(10, ge=2)
    """Neighbours per user in the affinity graph."""
    assign_labels: Literal["kmeans", "discretize", "cluster_qr"] = "cluster_qr"
    """How the spectral embedding becomes labels (``cluster_qr`` needs no restarts)."""
    max_fit_users: int = Field(10_000, ge=10)
    """Fit on a random sample of this many users when there are more."""


def fit_on_sample(segmenter, x: np.ndarray, k: int, max_fit_users: int, fit_fn) -> np.ndarray:
    """Run ``fit_fn(x_sample, k) -> labels`` on at most ``max_fit_users`` rows; place the rest.

    Sets ``segmenter.centers_`` to the segment means and returns labels for all rows.
    """
    n = len(x)
    if n > max_fit_users:
        warnings.warn(
            f"{type(segmenter).__name__}: fitting on a random {max_fit_users} of {n} users "
            "and placing the rest at the nearest segment mean; use KMeansSegmenter for "
            "large user bases",
            EfficiencyWarning,
            stacklevel=4,
        )
        idx = np.sort(
            np.random.default_rng(segmenter.config.random_state).choice(n, max_fit_users, replace=False)
        )
        sample_labels = np.asarray(fit_fn(x[idx], k), dtype=np.int64)
        # compact the labels so no empty label leaves a phantom all-zero centre
        sample_labels = np.searchsorted(np.unique(sample_labels), sample_labels)
        centers = segment_means(x[idx], sample_labels, int(sample_labels.max()) + 1)
        labels = nearest_center(x, centers)
        labels[idx] = sample_labels
    else:
        labels = np.asarray(fit_fn(x, k), dtype=np.int64)
    segmenter.centers_ = segment_means(x, labels, int(labels.max()) + 1)
    return labels


class SpectralSegmenter(Segmenter):
    """Spectral clustering on a symmetric kNN affinity graph of the user features.

    Attributes:
        labels_: int64 (n_users,).
        centers_: float32 (n_segments, n_features), segment means (used by ``assign``).
    """

    Config = SpectralConfig
    name = "spectral"

    def _fit_k(self, x, k, features):
        from sklearn.cluster import SpectralClustering

        cfg = self.config

        def run(xs, kk):
            if kk == 1:
                return np.zeros(len(xs), np.int64)
            model = SpectralClustering(
                kk,
                affinity="nearest_neighbors",
                n_neighbors=min(cfg.n_neighbors, len(xs) - 1),
                assign_labels=cfg.assign_labels,
                random_state=cfg.random_state,
            )
            return model.fit_predict(xs)

        return fit_on_sample(self, x, k, cfg.max_fit_users, run)
