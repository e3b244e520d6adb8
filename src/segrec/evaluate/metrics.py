"""Pure ranking metrics over top-k lists (EVAL_PROTOCOL.md, "Ranking and metrics").

All functions take a boolean hit matrix ``hits`` of shape (n_users, k) — whether
the item at each rank is a test item of that user — and ``n_relevant`` of shape
(n_users,), the user's number of test items. They return per-user values, so
every aggregate (overall, per segment, per tercile) is a mean over rows.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "coverage",
    "hit_rate",
    "mrr",
    "ndcg",
    "precision",
    "recall",
]


def recall(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Recall@k = hits in the top k / number of test items."""
    return hits[:, :k].sum(1) / np.maximum(n_relevant, 1)


def precision(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Precision@k = hits in the top k / k."""
    return hits[:, :k].sum(1) / k


def hit_rate(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """HitRate@k = 1 if any of the top k is a test item."""
    return hits[:, :k].any(1).astype(np.float64)


def mrr(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """MRR@k = 1 / rank of the first hit in the top k, 0 if none."""
    h = hits[:, :k]
    first = h.argmax(1)
    return np.where(h.any(1), 1.0 / (first + 1), 0.0)


def ndcg(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k with binary gains, log2 discount, IDCG over min(|test|, k) hits."""
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    top = hits[:, :k]  # fewer than k columns when the catalogue is smaller than k
    dcg = (top * discount[: top.shape[1]]).sum(1)
    ideal_cum = np.concatenate([[0.0], np.cumsum(discount)])
    idcg = ideal_cum[np.minimum(n_relevant, k)]
    return np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), 0.0)


def coverage(top_items: np.ndarray, n_items: int, k: int) -> float:
    """Coverage@k = distinct items in the users' top-k lists / catalogue size."""
    items = top_items[:, :k]
    items = items[items >= 0]
    return float(np.unique(items).size / n_items) if n_items else 0.0


#: metric name -> per-user function; the evaluator reports each at every k.
PER_USER_METRICS = {
    "ndcg": ndcg,
    "recall": recall,
    "hit_rate": hit_rate,
    "mrr": mrr,
    "precision": precision,
}
