"""Array helpers shared by the segmenters: the feature matrix, nearest centres, means, quality."""

from __future__ import annotations

import numpy as np

from ..errors import SegmentationError
from ..features.base import UserFeatures

__all__ = ["nearest_center", "quality_metrics", "segment_means"]


def _matrix(features: UserFeatures | np.ndarray) -> np.ndarray:
    x = features.matrix if isinstance(features, UserFeatures) else np.asarray(features)
    if x.ndim != 2:
        raise SegmentationError(f"features must be a 2-D matrix (n_users, n_features); got shape {x.shape}")
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x).all(1))[:5]
        raise SegmentationError(f"features have NaN/inf values in rows {bad.tolist()}")
    return np.ascontiguousarray(x, dtype=np.float32)


def nearest_center(x: np.ndarray, centers: np.ndarray, chunk_size: int = 65536) -> np.ndarray:
    """Index of the nearest centre (squared Euclidean) for each row, computed in chunks."""
    centers = np.asarray(centers, dtype=np.float32)
    c_sq = (centers**2).sum(1)
    out = np.empty(len(x), np.int64)
    for start in range(0, len(x), chunk_size):
        block = x[start : start + chunk_size]
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 is constant per row
        out[start : start + chunk_size] = np.argmin(c_sq[None, :] - 2.0 * (block @ centers.T), axis=1)
    return out


def quality_metrics(
    x: np.ndarray, labels: np.ndarray, *, sample_size: int = 5000, random_state: int = 0
) -> dict[str, float]:
    """Silhouette, Davies-Bouldin and Calinski-Harabasz on a reproducible sample.

    Silhouette is O(n^2), so every metric uses the same random sample of at
    most ``sample_size`` rows; NaN when the sample has fewer than 2 segments.
    """
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    n = len(x)
    if n > sample_size:
        idx = np.sort(np.random.default_rng(random_state).choice(n, sample_size, replace=False))
        x, labels = x[idx], labels[idx]
    k = len(np.unique(labels))
    if k < 2 or k >= len(x):
        return {"silhouette": float("nan"), "davies_bouldin": float("nan"), "calinski_harabasz": float("nan")}
    return {
        "silhouette": float(silhouette_score(x, labels)),
        "davies_bouldin": float(davies_bouldin_score(x, labels)),
        "calinski_harabasz": float(calinski_harabasz_score(x, labels)),
    }


def segment_means(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Mean feature row per label ``0..k-1``, float32 (k, d); zeros for empty labels."""
    import scipy.sparse as sp

    onehot = sp.csr_matrix((np.ones(len(labels)), (labels, np.arange(len(labels)))), shape=(k, len(labels)))
    sums = np.asarray(onehot @ x.astype(np.float64))
    counts = np.bincount(labels, minlength=k)[:, None]
    return (sums / np.maximum(counts, 1)).astype(np.float32)
