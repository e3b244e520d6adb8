"""Agglomerative (Ward) segmentation: merges users bottom-up, minimising within-segment variance.

Gives the same kind of compact segments as k-means without random restarts,
and a dendrogram-style ordering. Memory is O(n^2), so above ``max_fit_users`` it
fits on a random sample and places everyone else at the nearest segment mean.

Example:
    >>> import numpy as np
    >>> x = np.r_[np.zeros((3, 2)), np.full((2, 2), 3.0)]
    >>> AgglomerativeSegmenter(n_segments=2).fit(x).labels_.tolist()
    [0, 0, 0, 1, 1]
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from .base import Segmenter, SegmenterConfig
from .spectral import fit_on_sample

__all__ = ["AgglomerativeConfig", "AgglomerativeSegmenter"]


class AgglomerativeConfig(SegmenterConfig):
    """Settings of :class:`AgglomerativeSegmenter`."""

    linkage: Literal["ward", "average", "complete"] = "ward"
    """Merge criterion; Ward minimises the within-segment sum of squares."""
    max_fit_users: int = Field(15_000, ge=10)
    """Fit on a random sample of this many users when there are more."""


class AgglomerativeSegmenter(Segmenter):
    """Hierarchical clustering cut at ``n_segments`` (scikit-learn ``AgglomerativeClustering``).

    Deterministic: it has no random initialisation (``random_state`` only picks
    the sample for large inputs).

    Attributes:
        labels_: int64 (n_users,).
        centers_: float32 (n_segments, n_features), segment means (used by ``assign``).
    """

    Config = AgglomerativeConfig
    name = "agglomerative"

    def _fit_k(self, x, k, features):
        from sklearn.cluster import AgglomerativeClustering

        def run(xs, kk):
            if kk == 1:
                return np.zeros(len(xs), np.int64)
            return AgglomerativeClustering(kk, linkage=self.config.linkage).fit_predict(xs)

        return fit_on_sample(self, x, k, self.config.max_fit_users, run)
