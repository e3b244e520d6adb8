"""Does a segmentation pay off for recommendation? Per-segment EASE against one global EASE.

The downstream criterion of issue 3: on an inner split of the fit data, fit one
EASE per segment (on that segment's users only) and one global EASE, and
compare NDCG@10 on the inner-validation items. Segments smaller than
``min_segment_users`` are served by the global model, as a segmented system would.

The L2 weight of a segment model scales with the segment's share of users
(``scale_reg``): EASE's Gram matrix grows with the number of users, so the same
lambda would regularise a 10% segment ten times harder than the global model.

Example:
    >>> res = segment_ndcg(labels, inner_train, inner_valid, reg=100.0)  # doctest: +SKIP
    >>> res.segmented - res.global_  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..evaluate.metrics import ndcg
from ..evaluate.ranking import hit_matrix, rank_in_chunks
from ..types import Interactions

__all__ = ["DownstreamResult", "fit_segment_models", "per_user_ndcg", "segment_ndcg"]


@dataclass(frozen=True)
class DownstreamResult:
    """Inner-validation NDCG@k of per-segment models against the global one.

    Attributes:
        global_: Mean NDCG@k of the global model over evaluated users.
        segmented: Mean NDCG@k when each user is served by their segment's model.
        users: Dense ids of the evaluated users (those with inner-valid items).
        per_user_global: NDCG@k per evaluated user, global model.
        per_user_segmented: NDCG@k per evaluated user, their segment's model.
        n_local: Segments that got their own model.
    """

    global_: float
    segmented: float
    users: np.ndarray
    per_user_global: np.ndarray
    per_user_segmented: np.ndarray
    n_local: int

    @property
    def gain(self) -> float:
        """``segmented - global_``."""
        return self.segmented - self.global_

    def to_dict(self) -> dict[str, float]:
        """JSON-able numbers."""
        return {
            "global_ndcg@10": self.global_,
            "segmented_ndcg@10": self.segmented,
            "gain": self.gain,
            "n_local": self.n_local,
            "users": int(len(self.users)),
        }


def _ease(x: sp.csr_matrix, reg: float) -> np.ndarray:
    # the same closed form as segrec.models.EASERecommender (Steck 2019), on a given row subset
    from ..ease import ease_weights

    return ease_weights(x, reg, what="per-segment EASE")


def fit_segment_models(
    labels: np.ndarray,
    train_csr: sp.csr_matrix,
    *,
    reg: float,
    n_segments: int,
    min_segment_users: int = 20,
    scale_reg: bool = True,
) -> dict[int, np.ndarray]:
    """EASE weight matrices per segment with at least ``min_segment_users`` users (plus -1 = global).

    Args:
        labels: int array (n_users,), segment per dense user.
        train_csr: Binary user x item matrix the models learn from.
        reg: L2 weight of the global model.
        n_segments: Number of segments.
        min_segment_users: Smaller segments get no model of their own.
        scale_reg: Scale a segment's reg by its share of users with training rows.

    Returns:
        ``{-1: global weights, s: weights of segment s, ...}``.
    """
    active = np.diff(train_csr.indptr) > 0
    n_active = max(int(active.sum()), 1)
    models = {-1: _ease(train_csr, reg)}
    for s in range(n_segments):
        members = (labels == s) & active
        n_s = int(members.sum())
        if n_s < min_segment_users:
            continue
        r = reg * n_s / n_active if scale_reg else reg
        models[s] = _ease(train_csr[np.flatnonzero(members)], max(r, 1e-3))
    return models


def per_user_ndcg(
    weights: np.ndarray, users: np.ndarray, train_csr: sp.csr_matrix, valid_csr: sp.csr_matrix, k: int = 10
) -> np.ndarray:
    """NDCG@k of ``x_u @ weights`` for each user in ``users`` (train items excluded)."""
    if len(users) == 0:
        return np.zeros(0)

    def score(rows):
        return np.asarray(train_csr[rows] @ weights, dtype=np.float32)

    top, _ = rank_in_chunks(score, users, k, seen=train_csr)
    n_rel = np.diff(valid_csr.indptr)[users]
    return ndcg(hit_matrix(top, valid_csr, users), n_rel, k)


def segment_ndcg(
    labels: np.ndarray,
    train: Interactions,
    valid: Interactions,
    *,
    reg: float = 100.0,
    min_segment_users: int = 20,
    scale_reg: bool = True,
    k: int = 10,
) -> DownstreamResult:
    """Inner-validation NDCG@k of per-segment EASE vs global EASE.

    Args:
        labels: int array of shape (n_users,), segment per dense user.
        train: Inner-train interactions (models learn from these).
        valid: Inner-validation interactions (what is ranked).
        reg: Global EASE lambda (100 is the ml-100k choice in ANCHORS.md).
        min_segment_users: Segments smaller than this use the global model.
        scale_reg: Scale segment lambdas by the segment's share of users.
        k: Cut-off.

    Returns:
        DownstreamResult.
    """
    labels = np.asarray(labels, dtype=np.int64)
    train_csr, valid_csr = train.to_csr(), valid.to_csr()
    users = np.flatnonzero(np.diff(valid_csr.indptr) > 0)
    n_segments = int(labels.max()) + 1 if len(labels) else 0
    models = fit_segment_models(
        labels,
        train_csr,
        reg=reg,
        n_segments=n_segments,
        min_segment_users=min_segment_users,
        scale_reg=scale_reg,
    )
    g = per_user_ndcg(models[-1], users, train_csr, valid_csr, k)
    seg = g.copy()
    for s, w in models.items():
        if s < 0:
            continue
        m = labels[users] == s
        seg[m] = per_user_ndcg(w, users[m], train_csr, valid_csr, k)
    return DownstreamResult(
        float(g.mean()) if len(g) else 0.0,
        float(seg.mean()) if len(seg) else 0.0,
        users,
        g,
        seg,
        len(models) - 1,
    )
