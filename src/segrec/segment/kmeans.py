"""k-means segmentation with scikit-learn, and fast back-ends for large user bases.

Back-ends (``algorithm``):
- ``lloyd``: scikit-learn ``KMeans`` (k-means++, ``n_init`` restarts) — exact, the default below
  ``large_threshold`` users.
- ``sample``: ``KMeans`` on a random sample of ``sample_size`` users, then ``refine_iter``
  full-data Lloyd passes in chunks. The default above ``large_threshold``: 1M users x 64
  features into 32 segments in a few seconds on two cores (benchmarks/bench_segment_scale.py).
- ``minibatch``: scikit-learn ``MiniBatchKMeans``.
- ``faiss``: ``faiss.Kmeans``, only when faiss is installed (never required).

Example:
    >>> import numpy as np
    >>> x = np.r_[np.zeros((4, 3)), np.full((4, 3), 5.0)]
    >>> KMeansSegmenter(n_segments=2).fit(x).labels_.tolist()
    [0, 0, 0, 0, 1, 1, 1, 1]
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ..errors import MissingDependencyError
from .base import Segmenter, SegmenterConfig, nearest_center

__all__ = ["KMeansConfig", "KMeansSegmenter", "kmeans_fit"]

log = logging.getLogger(__name__)


class KMeansConfig(SegmenterConfig):
    """Settings of :class:`KMeansSegmenter`."""

    algorithm: Literal["auto", "lloyd", "sample", "minibatch", "faiss"] = "auto"
    """Back-end; ``auto`` is ``lloyd`` below ``large_threshold`` users, else ``sample``."""
    n_init: int = Field(4, ge=1)
    """k-means++ restarts (``lloyd``); the best inertia wins."""
    max_iter: int = Field(300, ge=1)
    """Lloyd iterations per run."""
    large_threshold: int = Field(100_000, ge=1)
    """From this many users on, ``auto`` switches to the sampled back-end."""
    sample_size: int = Field(32_768, ge=100)
    """Users the ``sample`` back-end fits on before the full-data passes."""
    refine_iter: int = Field(3, ge=0)
    """Full-data Lloyd passes after the sampled fit."""
    batch_size: int = Field(8192, ge=16)
    """Mini-batch size (``minibatch``)."""


def _lloyd_pass(x: np.ndarray, centers: np.ndarray, chunk_size: int = 32768):
    """One full-data pass: labels, per-centre sums and counts, chunked to stay in cache."""
    k = len(centers)
    c_sq = (centers**2).sum(1)
    labels = np.empty(len(x), np.int64)
    sums = np.zeros((k, x.shape[1]), np.float64)
    for start in range(0, len(x), chunk_size):
        block = x[start : start + chunk_size]
        lab = np.argmin(c_sq[None, :] - 2.0 * (block @ centers.T), axis=1)
        labels[start : start + chunk_size] = lab
        onehot = sp.csr_matrix(
            (np.ones(len(lab), np.float32), (lab, np.arange(len(lab)))), shape=(k, len(lab))
        )
        sums += onehot @ block
    return labels, sums, np.bincount(labels, minlength=k)


def _lloyd_refine(x: np.ndarray, centers: np.ndarray, n_iter: int) -> tuple[np.ndarray, np.ndarray]:
    labels, sums, counts = _lloyd_pass(x, centers)
    for _ in range(n_iter):
        # a centre that lost all its users stays where it was
        centers = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers).astype(
            np.float32
        )
        new_labels, sums, counts = _lloyd_pass(x, centers)
        moved = int((new_labels != labels).sum())
        labels = new_labels
        if moved == 0:
            break
    return labels, centers


def kmeans_fit(x: np.ndarray, k: int, cfg: KMeansConfig, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """Run the configured back-end; returns ``(labels, centers)``."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    algo = cfg.algorithm
    if algo == "auto":
        algo = "lloyd" if len(x) < cfg.large_threshold else "sample"
    if algo == "sample" and len(x) <= cfg.sample_size:
        algo = "lloyd"
    if algo == "lloyd":
        km = KMeans(k, n_init=cfg.n_init, max_iter=cfg.max_iter, random_state=random_state).fit(x)
        return km.labels_, km.cluster_centers_.astype(np.float32)
    if algo == "sample":
        rng = np.random.default_rng(random_state)
        idx = np.sort(rng.choice(len(x), cfg.sample_size, replace=False))
        km = KMeans(k, n_init=cfg.n_init, max_iter=cfg.max_iter, random_state=random_state).fit(x[idx])
        return _lloyd_refine(x, km.cluster_centers_.astype(np.float32), cfg.refine_iter)
    if algo == "minibatch":
        km = MiniBatchKMeans(
            k,
            batch_size=cfg.batch_size,
            n_init=1,
            max_iter=cfg.max_iter,
            random_state=random_state,
            reassignment_ratio=0.0,
        ).fit(x)
        return km.labels_, km.cluster_centers_.astype(np.float32)
    try:
        import faiss  # optional accelerator, never a dependency
    except ImportError as exc:
        raise MissingDependencyError(
            "KMeansSegmenter(algorithm='faiss') needs faiss; install faiss-cpu or faiss-gpu, "
            "or use algorithm='sample'"
        ) from exc
    km = faiss.Kmeans(x.shape[1], k, niter=min(cfg.max_iter, 25), seed=random_state, verbose=False)
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    centers = np.asarray(km.centroids, dtype=np.float32)
    return nearest_center(x, centers), centers


class KMeansSegmenter(Segmenter):
    """k-means over user features; the default segmenter.

    Attributes:
        labels_: int64 (n_users,).
        centers_: float32 (n_segments, n_features).
        inertia_: Sum of squared distances to the assigned centre.

    Example:
        >>> seg = KMeansSegmenter(n_segments="auto", random_state=0)  # K by silhouette
        >>> seg.fit(features).segmentation_.summary()  # doctest: +SKIP
    """

    Config = KMeansConfig
    name = "kmeans"

    def _fit_k(self, x, k, features):
        labels, centers = kmeans_fit(x, k, self.config, self.config.random_state)
        self.centers_ = centers
        self.inertia_ = 0.0
        for start in range(0, len(x), 65536):  # chunked: a full (n, d) residual is 256 MB at 1M x 64
            d = x[start : start + 65536] - centers[labels[start : start + 65536]]
            self.inertia_ += float(np.einsum("ij,ij->", d, d))
        return labels
