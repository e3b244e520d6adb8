"""Per-user inner-validation NDCG@10 of every candidate tier and of blends of two.

Tier by tier: each tier's inner version is scored over all validation users, a
chunk of users at a time (never one dense users x items matrix), and then
released if it is heavy (:class:`~segrec.route._fitting.InnerStage`), so at most
one heavy inner model is alive at a time. The blend pairs are then chosen on
every user's singles, and one more pass scores the pair tiers together for the
blends (a released pair tier is fitted again). NDCG@10 comes from the rank of
each relevant item (:func:`user_ndcg`), not from sorting, so the ~10 α of a blend
cost one pass each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..types import Interactions
from ._fitting import InnerStage
from .blend import combine, standardise

__all__ = ["Measured", "measure", "user_ndcg"]

#: float32 entries of one scored block (chunk x items) per tier kept at once
BLOCK_ENTRIES = 1e7


@dataclass
class Measured:
    """Per-user inner-validation NDCG@10 of the candidates and blends.

    Attributes:
        users: The dense users with validation items (ascending).
        singles: float64 (n_users, n_tiers); NaN where a tier cannot score a user.
        pairs: The blended ``(large, small)`` tier pairs.
        blends: float64 (n_users, n_pairs, n_alphas); NaN where neither tier scores a user.
    """

    users: np.ndarray
    singles: np.ndarray
    pairs: list[tuple[str, str]]
    blends: np.ndarray


def user_ndcg(scores: np.ndarray, seen_rows: np.ndarray, seen_cols: np.ndarray, truth: sp.csr_matrix,
              k: int = 10) -> np.ndarray:
    """Per-row NDCG@k of full-catalogue scores from the rank of each relevant item (no sort).

    The rank of a relevant item is the number of recommendable items scored above it,
    ties going to the lower item index as :func:`~segrec.evaluate.ranking.top_k` breaks
    them, so the value equals the evaluator's NDCG@k of the same scores.

    Args:
        scores: float32 (n, n_items); changed in place (seen items and NaN become -inf).
        seen_rows, seen_cols: Coordinates of each row's seen (excluded) items.
        truth: (n, n_items) CSR of each row's relevant items.
        k: Cut-off.

    Returns:
        float64 (n,); NaN for rows without a finite score (the model cannot score the user).
    """
    unscored = ~np.isfinite(scores).any(1)
    np.nan_to_num(scores, copy=False, nan=-np.inf)
    scores[seen_rows, seen_cols] = -np.inf
    n_rel = np.diff(truth.indptr)
    r = np.repeat(np.arange(len(n_rel)), n_rel)
    c = truth.indices
    gains = np.zeros(len(r))
    step = max(1, int(1e7 // max(scores.shape[1], 1)))  # relevant items compared at once
    for lo in range(0, len(r), step):
        rr, cc = r[lo:lo + step], c[lo:lo + step]
        own = scores[rr, cc]
        block = scores[rr]
        rank = (block > own[:, None]).sum(1)
        near = np.flatnonzero(rank < k)  # ties only matter where the item could make the top k
        if len(near):
            tied = (block[near] == own[near, None]) & (np.arange(block.shape[1])[None, :] < cc[near, None])
            rank[near] += tied.sum(1)
        gains[lo:lo + step] = np.where(np.isfinite(own) & (rank < k), 1.0 / np.log2(rank + 2.0), 0.0)
    dcg = np.bincount(r, weights=gains, minlength=len(n_rel))
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])[np.minimum(n_rel, k)]
    out = np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), 0.0)
    out[unscored] = np.nan
    return out


def _coords(csr: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sub = csr[rows]
    return np.repeat(np.arange(len(rows)), np.diff(sub.indptr)), sub.indices


def _blocks(positions: np.ndarray, n_items: int, kept: int):
    """Slices of ``positions`` whose blocks (chunk x items x tiers kept) stay near BLOCK_ENTRIES."""
    size = int(min(4096, max(32, BLOCK_ENTRIES // max(n_items * max(kept, 1), 1))))
    for lo in range(0, len(positions), size):
        yield positions[lo:lo + size]


def measure(stage: InnerStage, names: list[str], train: Interactions, valid: Interactions,
            choose_pairs: Callable[[np.ndarray, np.ndarray], list[tuple[str, str]]],
            alphas: np.ndarray) -> Measured:
    """Per-user inner-validation NDCG@10 of every named tier and of the chosen blends.

    Args:
        stage: The tiers as fitted on ``train`` only (fitted on demand, heavy ones released).
        names: The candidate tiers.
        train, valid: The inner split (``train`` items are excluded from the ranking).
        choose_pairs: ``(users, singles)`` -> the ``(large, small)`` pairs to blend.
        alphas: The large tier's weights to score blends at.
    """
    train_csr, valid_csr = train.to_csr(), valid.to_csr()
    users = np.flatnonzero(np.diff(valid_csr.indptr) > 0)
    n = len(users)
    singles = np.full((n, len(names)), np.nan)
    everyone = np.arange(n)
    for j, name in enumerate(names):
        model = stage.get(name)
        for block in _blocks(everyone, train.n_items, 1):
            rows = users[block]
            r, c = _coords(train_csr, rows)
            s = np.array(model.score_dense(rows), dtype=np.float32, copy=True)
            singles[block, j] = user_ndcg(s, r, c, valid_csr[rows])
        stage.release(name)
    pairs = list(choose_pairs(users, singles)) if n else []
    blends = np.full((n, len(pairs), len(alphas)), np.nan)
    kept = list(dict.fromkeys(t for pair in pairs for t in pair))
    if pairs:
        models = {t: stage.get(t) for t in kept}
        for block in _blocks(everyone, train.n_items, len(kept)):
            rows = users[block]
            r, c = _coords(train_csr, rows)
            truth = valid_csr[rows]
            z = {t: standardise(models[t].score_dense(rows), r, c) for t in kept}
            for p, (large, small) in enumerate(pairs):
                for a, alpha in enumerate(alphas):
                    blends[block, p, a] = user_ndcg(combine(z[large], z[small], float(alpha)), r, c, truth)
    return Measured(users, singles, pairs, blends)
