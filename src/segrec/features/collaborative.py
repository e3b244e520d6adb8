"""Collaborative block: truncated SVD of the (idf-weighted, row-normalised) user-item matrix.

Rows are idf-weighted so blockbusters everyone watched do not dominate the
factors, and L2-normalised so heavy users do not sit far from the origin
(activity is the behaviour block's job). New users are folded in with the
learned item factors: ``x_new @ components_.T``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ..types import Interactions
from .base import BlockConfig, FeatureBlock, _DenseNew, user_slices

__all__ = ["CollaborativeConfig", "CollaborativeFeatures"]


class CollaborativeConfig(BlockConfig):
    """Settings of :class:`CollaborativeFeatures`."""

    n_components: int = Field(32, ge=1)
    """SVD rank (capped at n_items - 1 and n_users - 1)."""
    n_iter: int = Field(7, ge=1)
    """Randomised SVD power iterations."""
    random_state: int = 0
    """Seed of the randomised SVD."""


class CollaborativeFeatures(FeatureBlock):
    """User factors from a truncated SVD of the fit-data interaction matrix.

    Attributes:
        components_: float64 (n_components, n_items), item factors.
        idf_: float64 (n_items,), item weights.
    """

    Config = CollaborativeConfig
    name = "svd"
    standardize_columns = False

    def _rows(self, data: Interactions | None, new: _DenseNew | None, n_items: int) -> sp.csr_matrix:
        indptr, items, _ = user_slices(data, new)
        x = sp.csr_matrix((np.ones(len(items)), items, indptr), shape=(len(indptr) - 1, n_items))
        x.sum_duplicates()
        x.data[:] = 1.0
        return x

    def _weight(self, x: sp.csr_matrix) -> sp.csr_matrix:
        x = x.multiply(self.idf_[None, :]).tocsr()
        norms = np.sqrt(np.asarray(x.multiply(x).sum(1)).ravel())
        return sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ x

    def _fit(self, data: Interactions) -> None:
        from sklearn.decomposition import TruncatedSVD

        x = self._rows(data, None, data.n_items)
        df = np.asarray(x.sum(0)).ravel()
        self.idf_ = np.log((1.0 + data.n_users) / (1.0 + df)) + 1.0
        k = max(1, min(self.config.n_components, data.n_items - 1, data.n_users - 1))
        if min(data.n_items, data.n_users) < 2:
            # one item or one user: there is no co-occurrence to factor (TruncatedSVD refuses a
            # single feature); one all-zero column keeps the block's shape for the pipeline
            self.components_ = np.zeros((1, data.n_items), dtype=np.float64)
            self.columns_ = ("f0",)
            return
        svd = TruncatedSVD(k, n_iter=self.config.n_iter, random_state=self.config.random_state)
        svd.fit(self._weight(x))
        self.components_ = svd.components_.astype(np.float64)
        self.columns_ = tuple(f"f{i}" for i in range(k))

    def _transform(self, data: Interactions | None, new: _DenseNew | None) -> np.ndarray:
        x = self._weight(self._rows(data, new, self.components_.shape[1]))
        return np.asarray(x @ self.components_.T, dtype=np.float64)
