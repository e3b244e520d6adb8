"""Per-user inner-validation NDCG@10 of every candidate tier and of blends of two, in one scoring pass.

Every tier is scored once per validation user, a chunk of users at a time (never
one dense users x items matrix). Which pairs to blend is decided on a random probe
of the users first (their singles are scored before anyone's blend), so the rest
of the users get singles and blends from the same scores: only the probe users'
pair tiers are scored twice. NDCG@10 comes from the rank of each relevant item
(:func:`user_ndcg`), not from sorting, so the ~10 α of a blend cost one pass each.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..models.base import Recommender
from ..types import Interactions
from .blend import combine, standardise

__all__ = ["Measured", "measure", "user_ndcg"]

#: users whose singles choose the blend pairs (at least, or a fifth of the users when more)
PROBE_USERS = 1024
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


def measure(models: Mapping[str, Recommender], names: list[str], train: Interactions, valid: Interactions,
            choose_pairs: Callable[[np.ndarray, np.ndarray], list[tuple[str, str]]], alphas: np.ndarray,
            *, seed: int = 0) -> Measured:
    """Per-user inner-validation NDCG@10 of every named model and of the chosen blends.

    Args:
        models: name -> model fitted on ``train`` only.
        names: The candidate tiers.
        train, valid: The inner split (``train`` items are excluded from the ranking).
        choose_pairs: ``(users, singles)`` of the probe users -> the ``(large, small)`` pairs to blend.
        alphas: The large tier's weights to score blends at.
        seed: Seed of the probe draw.
    """
    train_csr, valid_csr = train.to_csr(), valid.to_csr()
    users = np.flatnonzero(np.diff(valid_csr.indptr) > 0)
    n = len(users)
    singles = np.full((n, len(names)), np.nan)
    order = np.random.default_rng(seed).permutation(n)
    n_probe = min(n, max(PROBE_USERS, n // 5))
    probe, rest = np.sort(order[:n_probe]), np.sort(order[n_probe:])

    def score(block: np.ndarray, tiers: list[str], keep: set[str]) -> dict[str, np.ndarray]:
        # singles of `tiers` for these users; the standardised scores of those in `keep`
        rows = users[block]
        r, c = _coords(train_csr, rows)
        truth = valid_csr[rows]
        z = {}
        for name in tiers:
            s = np.array(models[name].score_dense(rows), dtype=np.float32, copy=True)
            if name in keep:
                z[name] = standardise(s, r, c)
            singles[block, names.index(name)] = user_ndcg(s, r, c, truth)
        return z

    for block in _blocks(probe, train.n_items, 1):
        score(block, names, set())
    pairs = list(choose_pairs(users[probe], singles[probe])) if n else []
    kept = list(dict.fromkeys(t for pair in pairs for t in pair))
    blends = np.full((n, len(pairs), len(alphas)), np.nan)

    def mix(block: np.ndarray, z: dict[str, np.ndarray]) -> None:
        rows = users[block]
        r, c = _coords(train_csr, rows)
        truth = valid_csr[rows]
        for p, (large, small) in enumerate(pairs):
            for a, alpha in enumerate(alphas):
                blends[block, p, a] = user_ndcg(combine(z[large], z[small], float(alpha)), r, c, truth)

    if pairs:  # the probe users' pair tiers once more, then everyone else's tiers once
        for block in _blocks(probe, train.n_items, len(kept)):
            rows = users[block]
            r, c = _coords(train_csr, rows)
            mix(block, {t: standardise(models[t].score_dense(rows), r, c) for t in kept})
    for block in _blocks(rest, train.n_items, len(kept) + 1):
        z = score(block, names, set(kept))
        if pairs:
            mix(block, z)
    return Measured(users, singles, pairs, blends)
