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

#: the fitted GaussianMixture arrays a saved GMM segmenter keeps
_GMM_ARRAYS = ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_")


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

    own_state = ("model_",)

    def membership(self, features) -> np.ndarray:
        """The component probabilities of each row, in segment order (see :meth:`predict_proba`)."""
        return self.predict_proba(features)

    def _extra_state(self):
        m = self.model_
        arrays = {f"gmm.{k}": np.asarray(getattr(m, k)) for k in _GMM_ARRAYS}
        return arrays, {"n_features_in": int(m.n_features_in_), "converged": bool(m.converged_),
                        "n_iter": int(m.n_iter_), "lower_bound": float(m.lower_bound_)}

    def _restore_extra(self, tensors, meta):
        from sklearn.mixture import GaussianMixture

        cfg = self.config
        m = GaussianMixture(len(tensors["gmm.weights_"]), covariance_type=cfg.covariance_type,
                            n_init=cfg.n_init, max_iter=cfg.max_iter, reg_covar=cfg.reg_covar,
                            random_state=cfg.random_state)
        for k in _GMM_ARRAYS:  # the fitted attributes predict_proba reads (no pickle)
            setattr(m, k, tensors[f"gmm.{k}"])
        m.n_features_in_, m.converged_ = meta["n_features_in"], meta["converged"]
        m.n_iter_, m.lower_bound_ = meta["n_iter"], meta["lower_bound"]
        self.model_ = m

    def predict_proba(self, features) -> np.ndarray:
        """Membership probabilities, shape (n, n_segments), columns in segment order."""
        from ._arrays import _matrix
        from .base import check_is_fitted

        check_is_fitted(self)
        proba = self.model_.predict_proba(_matrix(features))[:, self.raw_labels_]
        return proba / np.maximum(proba.sum(1, keepdims=True), 1e-300)

    def _assign_raw(self, x, features):
        # only components that won users in fit are segments; argmax among those
        proba = self.model_.predict_proba(x)[:, self.raw_labels_]
        return self.raw_labels_[np.argmax(proba, axis=1)]
