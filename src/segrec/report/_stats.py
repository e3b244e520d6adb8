"""The report's reductions: JSON-safe values, bootstrap CIs of a mean, and the user map."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["BOOTSTRAP_MAX_USERS", "clean", "mean_ci", "user_map"]

#: above this many users per group the CI of a mean comes from the normal
#: approximation: a percentile bootstrap costs n_boot x n draws (2000 x 10k ~ 0.3 s
#: per group, and a run has systems x segments groups) and agrees with the CLT to
#: the plotted precision at that size
BOOTSTRAP_MAX_USERS = 10_000


def clean(obj: Any) -> Any:
    """A JSON-safe copy: numpy scalars to Python, NaN and infinities to None, keys to str."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def mean_ci(values: np.ndarray, *, n_boot: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """Mean of ``values`` with a 95% percentile-bootstrap CI (normal approximation when large).

    Args:
        values: Per-user metric values of one group.
        n_boot: Bootstrap resamples.
        rng: Resampling generator.

    Returns:
        ``(mean, lo, hi)``; all NaN for an empty group.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if n == 1:
        return mean, mean, mean
    if n > BOOTSTRAP_MAX_USERS:
        half = 1.96 * float(v.std(ddof=1)) / math.sqrt(n)
        return mean, mean - half, mean + half
    # resample in blocks so memory stays ~ 4M draws whatever n_boot is
    block = max(1, 4_000_000 // n)
    boots = np.concatenate(
        [v[rng.integers(0, n, size=(min(block, n_boot - s), n))].mean(1) for s in range(0, n_boot, block)]
    )
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return mean, float(lo), float(hi)


def user_map(
    data: Any, segments: np.ndarray, *, max_users: int = 3000, n_factors: int = 16, seed: int = 0
) -> dict[str, Any]:
    """2-D coordinates of users: PCA of a truncated SVD of the (tf-idf weighted) user-item matrix.

    The segmentation features are not kept by a run, so the map is drawn from the
    interactions alone: an honest view of how far apart the segments' tastes are
    (planted segments separate cleanly; overlapping ones overlap here too).

    Args:
        data: The fit interactions (``to_csr()``).
        segments: Segment per dense user (-1 = none).
        max_users: Users plotted at most (a uniform sample, same for every run seed).
        n_factors: SVD rank before the PCA to 2-D.
        seed: Sampling and SVD seed.

    Returns:
        ``{"x", "y", "segment", "n_users", "shown", "method", "explained"}``.
    """
    from scipy.sparse.linalg import svds

    x = data.to_csr().astype(np.float64)
    x.data[:] = 1.0
    n_users, n_items = x.shape
    # idf down-weights blockbusters everyone shares, so tastes (not popularity) set the axes
    df = np.asarray((x > 0).sum(0)).ravel()
    idf = np.log((1 + n_users) / (1 + df)) + 1.0
    x = x.multiply(idf[None, :]).tocsr()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(1)).ravel())
    x = x.multiply(1.0 / np.maximum(norms, 1e-12)[:, None]).tocsr()
    rng = np.random.default_rng(seed)
    k = max(2, min(n_factors, min(n_users, n_items) - 1))
    if min(n_users, n_items) <= 3:  # svds needs k < min(shape)
        factors = x.toarray()[:, :2]
    else:
        v0 = rng.standard_normal(min(x.shape))
        u, s, _ = svds(x, k=k, v0=v0, random_state=seed)
        factors = u * s
    factors = factors - factors.mean(0)
    # PCA of the factors: the two directions of largest spread
    _, sv, vt = np.linalg.svd(factors, full_matrices=False)
    coords = factors @ vt[:2].T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    explained = (sv[:2] ** 2 / max(float((sv**2).sum()), 1e-12)).tolist()
    # a sign convention so that the same data gives the same picture
    coords *= np.where(np.sign(coords.sum(0)) < 0, -1.0, 1.0)
    shown = np.arange(n_users)
    if n_users > max_users:
        shown = np.sort(rng.choice(n_users, size=max_users, replace=False))
    return {
        "x": np.round(coords[shown, 0], 4).tolist(),
        "y": np.round(coords[shown, 1], 4).tolist(),
        "segment": np.asarray(segments)[shown].astype(int).tolist(),
        "n_users": int(n_users),
        "shown": int(len(shown)),
        "explained": explained,
        "method": f"PCA of a rank-{k} SVD of the idf-weighted user-item matrix (fit data)",
    }
