"""Gaussian-mixture segmentation (scikit-learn ``GaussianMixture``).

Soft clusters with per-segment spread: useful when segments differ in how
varied they are, not only in where they sit. ``diag`` covariances keep it stable
on wide feature matrices (a 384-d text profile plus behaviour columns).

Example:
    >>> import numpy as np
    >>> x = np.r_[np.zeros((5, 2)), np.full((5, 2), 4.0)] + np.linspace(0, 0.1, 10)[:, None]
    >>> GMMSegmenter(n_segments=2, random_state=0).fit(x).labels_.tolist()
    [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from .base import Segmenter, SegmenterConfig

__all__ = ["GMMConfig", "GMMSegmenter"]


class GMMConfig(SegmenterConfig):
    """Settings of :class:`GMMSegmenter`."""

    covariance_type: Literal["full", "tied", "diag", "spherical"] = "diag"
    """Covariance structure per component."""
    n_init: int = Field(2, ge=1)
    """EM restarts; the best likelihood wins."""
    max_iter: int = Field(200, ge=1)
    """EM iterations per run."""
    reg_covar: float = Field(1e-4, gt=0)
    """Added to covariance diagonals (keeps near-constant columns from collapsing)."""


class GMMSegmenter(Segmenter):
    """Gaussian mixture over user features; labels are the most probable component.

    Attributes:
        labels_: int64 (n_users,).
        centers_: float32 (n_segments, n_features), the component means.
        model_: The fitted ``sklearn.mixture.GaussianMixture``.
    """

    Config = GMMConfig
    name = "gmm"

    def _fit_k(self, x, k, features):
        from sklearn.mixture import GaussianMixture

        cfg = self.config
        self.model_ = GaussianMixture(
            k,
            covariance_type=cfg.covariance_type,
            n_init=cfg.n_init,
            max_iter=cfg.max_iter,
            reg_covar=cfg.reg_covar,
            random_state=cfg.random_state,
        ).fit(x)
        self.centers_ = self.model_.means_.astype(np.float32)
        return self.model_.predict(x)

    def predict_proba(self, features) -> np.ndarray:
        """Membership probabilities, shape (n, n_segments), columns in segment order."""
        from .base import _matrix, check_is_fitted

        check_is_fitted(self)
        proba = self.model_.predict_proba(_matrix(features))[:, self.raw_labels_]
        return proba / np.maximum(proba.sum(1, keepdims=True), 1e-300)

    def _assign_raw(self, x, features):
        # only components that won users in fit are segments; argmax among those
        proba = self.model_.predict_proba(x)[:, self.raw_labels_]
        return self.raw_labels_[np.argmax(proba, axis=1)]
